// Task queues: the unit of CPU scheduling on a shard. Every fiber belongs to
// one; the reactor divides CPU time between runnable queues in proportion to
// their shares (virtual runtime) and runs a queue's fibers in order. A queue
// whose latency matters gets the running fiber preempted when it has waited
// past its bound. Fibers not spawned into a queue run in the default queue.
//
//   auto& background = percore::create_task_queue(100, percore::latency::not_important(),
//   "compaction"); auto& requests = percore::create_task_queue(900, percore::latency::matters(1ms),
//   "requests"); percore::spawn_into(background, [] { compact(); });
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "percore/clock.hpp"
#include "percore/detail/fiber_base.hpp"

namespace percore {

class reactor;
namespace detail {
class stall_detector;
}

// How much a queue's scheduling latency matters.
struct latency {
    duration bound = duration::zero();  // zero: not important

    // Throughput work: runs when its shares say so, never preempts anyone.
    static constexpr latency not_important() noexcept { return latency{}; }
    // The queue is served within `bound` of becoming runnable (while its
    // shares allow): the running fiber is asked to yield. Throws
    // std::invalid_argument unless 0 < bound <= 10 s.
    static latency matters(duration bound);

    bool is_sensitive() const noexcept { return bound > duration::zero(); }
};

// Delays in nanoseconds: logarithmic buckets, 8 per power of two (each at
// most 12.5% wide), from 0 to ~1100 s (larger values land in the last one).
class delay_histogram {
  public:
    static constexpr unsigned sub_buckets = 8;
    static constexpr unsigned max_power = 40;
    static constexpr unsigned bucket_count = (max_power - 1) * sub_buckets;

    void record(std::uint64_t ns) noexcept {
        ++counts_[bucket_of(ns)];
        ++count_;
        sum_ns_ += ns;
    }
    std::uint64_t count() const noexcept { return count_; }
    std::uint64_t sum_ns() const noexcept { return sum_ns_; }
    // The upper edge of the bucket holding the q-quantile (0 < q <= 1); 0 if empty.
    std::uint64_t quantile(double q) const noexcept;
    // How many recorded values are below 2^power ns (exact: a bucket edge).
    std::uint64_t count_below_power_of_two(unsigned power) const noexcept;
    void merge(const delay_histogram& other) noexcept;

    static unsigned bucket_of(std::uint64_t ns) noexcept {
        if (ns < sub_buckets) return static_cast<unsigned>(ns);
        unsigned power = 63u - static_cast<unsigned>(__builtin_clzll(ns));  // >= 3
        if (power >= max_power) return bucket_count - 1;
        unsigned sub = static_cast<unsigned>(ns >> (power - 3)) & (sub_buckets - 1);
        return (power - 2) * sub_buckets + sub;
    }
    // The smallest value of bucket i (the upper edge of bucket i - 1).
    static std::uint64_t bucket_floor(unsigned i) noexcept {
        if (i < sub_buckets) return i;
        unsigned power = i / sub_buckets + 2;
        return std::uint64_t{sub_buckets + i % sub_buckets} << (power - 3);
    }

  private:
    std::array<std::uint64_t, bucket_count> counts_{};
    std::uint64_t count_ = 0;
    std::uint64_t sum_ns_ = 0;
};

// What a queue did; owned by its shard, read there (stats(), --stats, metrics).
struct task_queue_stats {
    std::uint64_t runtime_ns = 0;   // CPU time its fibers ran
    std::uint64_t tasks_run = 0;    // times one of its fibers was resumed
    std::uint64_t activations = 0;  // times it became runnable after idling
    std::uint64_t preemptions = 0;  // slices cut short by the quota or a latency queue
    std::uint64_t stalls = 0;       // stall reports against its fibers
    // Ready -> running delay of its fibers: every fiber of a latency queue,
    // one in 64 of the others (timing each switch would double its cost).
    delay_histogram delay;
};

// A FIFO of runnable fibers with a scheduling identity (name, shares, latency).
// Lives as long as its shard; use it only on that shard.
class task_queue {
  public:
    static constexpr unsigned min_shares = 1;
    static constexpr unsigned max_shares = 100000;

    // Queues are made by create_task_queue(); the reactor makes the default one.
    task_queue(std::string name, unsigned shares = 1000, latency lat = latency::not_important());
    task_queue(const task_queue&) = delete;
    task_queue& operator=(const task_queue&) = delete;

    const std::string& name() const noexcept { return name_; }
    unsigned shares() const noexcept { return shares_; }
    // Changes the CPU share from the queue's next accounting on (within a
    // quota). Throws std::invalid_argument outside [min_shares, max_shares].
    void set_shares(unsigned shares);
    latency latency_class() const noexcept { return latency_; }
    bool empty() const noexcept { return head_ == nullptr; }
    const task_queue_stats& stats() const noexcept { return stats_; }

    // Appends a runnable fiber (reactor-internal).
    void push(detail::fiber_base* fiber) noexcept {
        fiber->next_ready_ = nullptr;
        if (tail_) {
            tail_->next_ready_ = fiber;
        } else {
            head_ = fiber;
        }
        tail_ = fiber;
    }
    // Takes the next runnable fiber, or nullptr (reactor-internal).
    detail::fiber_base* pop() noexcept {
        auto* f = head_;
        if (f) {
            head_ = f->next_ready_;
            if (!head_) tail_ = nullptr;
        }
        return f;
    }

  private:
    friend class reactor;
    friend class detail::stall_detector;

    std::string name_;
    unsigned shares_;
    latency latency_;
    detail::fiber_base* head_ = nullptr;
    detail::fiber_base* tail_ = nullptr;
    // Scheduler state (reactor-internal).
    std::uint64_t vruntime_ = 0;     // runtime scaled by 1000 / shares
    int heap_index_ = -1;            // place among the runnable queues; -1: not there
    bool scheduled_ = false;         // running or runnable: the reactor knows of it
    bool sample_all_ = false;        // time every fiber's queue delay (latency queues)
    std::uint64_t slice_tasks_ = 0;  // the shard's tasks_run when its slice began
    reactor* owner_ = nullptr;       // the shard's reactor
    task_queue_stats stats_;
};

// Makes a task queue on the calling shard (inside a fiber or the reactor's
// thread). `shares` in [1, 100000] weighs its CPU time against the other
// runnable queues (the default queue has 1000). Names must be unique on the
// shard (they label its metrics): std::invalid_argument otherwise, or for
// bad shares, an empty name, or more than 256 queues on a shard.
task_queue& create_task_queue(unsigned shares, latency lat, std::string name);

// The calling shard's queues, the default queue first.
const std::vector<task_queue*>& task_queues();

}  // namespace percore

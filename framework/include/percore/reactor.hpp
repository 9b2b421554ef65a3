// The per-shard event loop. One reactor per shard thread owns an io_uring,
// the shard's fibers (in task queues), its timers and its pollers. Each turn:
// run ready fibers (up to the task quota), poll (cross-shard rings...), reap
// completions, fire timers; and only when nothing is runnable, sleep in the
// ring until a completion, a timer or another shard's wake-up.
#pragma once

#include <liburing.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <new>
#include <vector>

#include "percore/clock.hpp"
#include "percore/detail/fiber_base.hpp"
#include "percore/io.hpp"
#include "percore/scheduling.hpp"
#include "percore/stats.hpp"

namespace percore {

namespace detail {
class timer_heap;
class stack_pool;
}  // namespace detail

// Tunables of one reactor; the app shell fills them from its options.
struct reactor_config {
    unsigned ring_depth = 1024;                     // --ring-depth: SQ entries
    std::chrono::microseconds task_quota{500};      // --task-quota-us
    std::size_t stack_size = 128 * 1024;            // default fiber stack
    std::chrono::microseconds idle_poll{0};         // busy-poll this long before sleeping
};

// Something the reactor polls every turn (the inbound cross-shard rings...).
class poller {
public:
    virtual ~poller() = default;
    // Does whatever work is pending; true if there was some.
    virtual bool poll() = 0;
    // Called after the reactor announced sleep: true if work arrived meanwhile
    // (the reactor then stays awake). Must not do the work.
    virtual bool has_work() const = 0;
};

class reactor {
public:
    reactor(unsigned shard_id, unsigned shard_count, const reactor_config& config);
    ~reactor();
    reactor(const reactor&) = delete;
    reactor& operator=(const reactor&) = delete;

    // The reactor of the calling thread; throws std::logic_error if none.
    static reactor& local();
    static reactor* local_or_null() noexcept;
    // Reactor of any shard of the running set (for cross-shard wake-ups).
    static reactor& of_shard(unsigned shard);

    unsigned shard_id() const noexcept { return shard_id_; }
    unsigned shard_count() const noexcept { return shard_count_; }
    const reactor_config& config() const noexcept { return config_; }

    // Runs the loop on this thread until request_stop(); then cancels
    // outstanding I/O and unwinds every remaining fiber before returning.
    void run();
    // Asks the loop to stop. Safe from any thread.
    void request_stop() noexcept;
    bool stop_requested() const noexcept { return stop_requested_.load(std::memory_order_relaxed); }

    // Wakes the reactor if it sleeps in its ring. Safe from any thread; costs
    // one atomic load when the reactor is awake.
    void wake() noexcept {
        if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) send_wakeup();
    }

    void add_poller(poller* p);
    void remove_poller(poller* p) noexcept;

    task_queue& default_queue() noexcept { return default_queue_; }
    shard_stats& stats() noexcept { return stats_; }

    // Whether the running fibers used up the task quota (see need_preempt()).
    bool need_preempt() const noexcept { return clock::now() >= quota_end_; }

    // Internal interfaces of the fiber, timer and I/O modules.
    detail::timer_heap& timers() noexcept { return *timers_; }
    detail::stack_pool& stacks() noexcept { return *stacks_; }
    io_uring_sqe* get_sqe(completion_handler* handler, unsigned then_more);
    void cancel_io_on_fd(int fd);
    void schedule(detail::fiber_base* fiber) noexcept { fiber->queue()->push(fiber); }
    void on_fiber_created(detail::fiber_base* fiber) noexcept;
    // Set by the app shell so that all shards can find each other.
    static void set_shard_table(std::vector<reactor*> table);

    // The fiber switch (fiber.cpp). `from`/`to` nullptr mean the reactor.
    void jump(detail::fiber_base* from, detail::fiber_base* to);
    // The current fiber gives up the CPU: to the next ready fiber, or to the
    // reactor when none is ready or the task quota is spent.
    void switch_out(detail::fiber_base* from);
    static void fiber_entry(boost::context::detail::transfer_t t);
    detail::fiber_base* current() const noexcept { return current_; }
    // The scheduler's choice of what runs next (nullptr: nothing ready).
    detail::fiber_base* pick_next_fiber() noexcept { return default_queue_.pop(); }

private:

    // The steps of one loop turn.
    bool run_ready_fibers();
    bool poll_pollers();
    bool reap_completions();
    bool fire_expired_timers();
    void sleep_until_work();

    void arrived(boost::context::detail::transfer_t t);
    void unlink_live(detail::fiber_base* fiber) noexcept;
    void shutdown_fibers();
    void arm_wakeup_read();
    void send_wakeup() noexcept;

    unsigned shard_id_;
    unsigned shard_count_;
    reactor_config config_;
    io_uring ring_{};
    unsigned inflight_ = 0;  // operations whose final CQE has not arrived
    time_point quota_end_{};
    detail::fiber_base* current_ = nullptr;
    detail::fiber_base* live_head_ = nullptr;  // every fiber not yet finished
    std::size_t live_count_ = 0;
    boost::context::detail::fcontext_t main_context_ = nullptr;
    unsigned switches_since_quota_check_ = 0;
    const void* main_stack_bottom_ = nullptr;  // for AddressSanitizer's fiber support
    std::size_t main_stack_size_ = 0;
    void* main_fake_stack_ = nullptr;
    task_queue default_queue_{"default"};
    std::unique_ptr<detail::timer_heap> timers_;
    std::unique_ptr<detail::stack_pool> stacks_;
    std::vector<poller*> pollers_;
    shard_stats stats_;

    // Cross-thread state, each on its own cache line so a remote shard
    // reading `sleeping_` does not bounce the lines this shard writes.
    alignas(64) std::atomic<bool> sleeping_{false};
    alignas(64) std::atomic<bool> stop_requested_{false};
    int wakeup_fd_ = -1;
    std::uint64_t wakeup_buffer_ = 0;
    class wakeup_handler;
    std::unique_ptr<wakeup_handler> wakeup_handler_;
};

// The id of the shard running the caller, 0 .. shard_count() - 1.
unsigned this_shard_id() noexcept;
// How many shards the app runs.
unsigned shard_count() noexcept;

}  // namespace percore

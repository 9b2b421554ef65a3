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
#include <string>
#include <vector>

#include "percore/clock.hpp"
#include "percore/detail/fiber_base.hpp"
#include "percore/io.hpp"
#include "percore/scheduling.hpp"
#include "percore/stats.hpp"

namespace percore {

class reactor;

namespace detail {
class timer_heap;
class stack_pool;
class stall_detector;
// The reactor of this thread (constinit: read without a TLS wrapper call;
// initial-exec: one %fs-relative load once linked into an executable, where
// the general model costs a load of the thread pointer and then the variable).
extern thread_local constinit reactor* local_reactor [[gnu::tls_model("initial-exec")]];
}  // namespace detail

// Tunables of one reactor; the app shell fills them from its options.
struct reactor_config {
    unsigned ring_depth = 1024;                     // --ring-depth: SQ entries
    std::chrono::microseconds task_quota{500};      // --task-quota-us
    std::size_t stack_size = 128 * 1024;            // default fiber stack
    std::chrono::microseconds idle_poll{0};         // busy-poll this long before sleeping
    std::chrono::milliseconds stall_threshold{25};  // --stall-threshold-ms; 0: no stall detector
    // Block-device reads and writes are submitted once this many are queued,
    // not only at the end of the turn: a disk starts on the first ones while
    // the fibers prepare the rest (4 KiB random reads at depth 32 on a virtio
    // disk: +15 % IOPS over one batch per turn, same p99). 0: once per turn.
    // 4, not 8: on a disk twice as fast, depth 32 gave 0.99x fio's IOPS with
    // 4 and 0.955x with 8 (1: 1.01x at a third more CPU); depth 128 is the
    // same with 2, 4 or 8.
    unsigned device_submit_batch = 4;
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
    static reactor* local_or_null() noexcept { return detail::local_reactor; }
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
    // Sequentially consistent: sleep_until_work() stores its sleeping flag,
    // then loads this, while request_stop() stores this, then exchanges the
    // flag; only seq_cst on both sides promises one of them sees the other
    // (free on x86, where a seq_cst load is a plain load).
    bool stop_requested() const noexcept { return stop_requested_.load(std::memory_order_seq_cst); }

    // Wakes the reactor if it sleeps in its ring. Safe from any thread; costs
    // one atomic load when the reactor is awake.
    void wake() noexcept {
        if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) send_wakeup();
    }

    void add_poller(poller* p);
    void remove_poller(poller* p) noexcept;

    task_queue& default_queue() noexcept { return default_queue_; }
    shard_stats& stats() noexcept { return stats_; }

    // Task queues (scheduling.hpp): a new one on this shard, and all of them
    // (the default queue first).
    task_queue& create_queue(unsigned shares, latency lat, std::string name);
    const std::vector<task_queue*>& queues() const noexcept { return queues_; }

    // Whether the running fiber should yield: the task quota is spent or a
    // latency-sensitive queue waits. Two loads: the preemption ring's CQ tail
    // (the kernel posts a CQE there when the alarm fires) against the last
    // tail this reactor consumed; in the first turn after a sleep, which arms
    // no alarm (see start_turn_alarms), a clock read instead.
    bool need_preempt() const noexcept {
        return __atomic_load_n(preempt_tail_, __ATOMIC_RELAXED) != preempt_seen_ ||
               (quota_by_clock_ && clock::now() >= quota_deadline_);
    }
    // Makes need_preempt() true until the next loop turn.
    void request_preempt() noexcept { preempt_seen_ = *preempt_tail_ + 0x80000000u; }

    // Internal interfaces of the fiber, timer and I/O modules.
    detail::timer_heap& timers() noexcept { return *timers_; }
    detail::stack_pool& stacks() noexcept { return *stacks_; }
    io_uring_sqe* get_sqe(completion_handler* handler, unsigned then_more);
    // Counts an SQE just prepared for a block device: submits what is queued
    // once device_submit_batch of them wait (see reactor_config).
    void queued_device_io() {
        if (++device_sqes_queued_ >= config_.device_submit_batch && config_.device_submit_batch > 0)
            submit_queued();
    }
    void cancel_io_on_fd(int fd);
    // Makes a fiber runnable in its queue; a queue that was idle becomes runnable.
    void schedule(detail::fiber_base* fiber) noexcept {
        task_queue* q = fiber->queue_;
        q->push(fiber);
        if (q->sample_all_ || --delay_sample_countdown_ == 0) stamp_ready(fiber);
        if (!q->scheduled_) activate(q);
    }
    void on_fiber_created(detail::fiber_base* fiber) noexcept;
    // Set by the app shell so that all shards can find each other.
    static void set_shard_table(std::vector<reactor*> table);

    // The fiber switch (fiber.cpp). `from`/`to` nullptr mean the reactor.
    void jump(detail::fiber_base* from, detail::fiber_base* to);
    // The current fiber gives up the CPU: to the next ready fiber, or to the
    // reactor when none is ready or the task quota is spent. `from_ended`:
    // it finished and never comes back (the side that arrives frees it).
    // Inlined into the fiber module's suspension points (fiber.cpp).
    inline void switch_out(detail::fiber_base* from, bool from_ended = false);
    static void fiber_entry(boost::context::detail::transfer_t t);
    detail::fiber_base* current() const noexcept { return current_; }
    // The scheduler's choice of what runs next from inside a fiber (nullptr:
    // back to the reactor, because nothing is ready or it must preempt). The
    // running queue goes on until empty or preempted; only then are queues
    // compared (switch_queue).
    detail::fiber_base* pick_next_fiber() noexcept {
        if (need_preempt()) [[unlikely]]
            return nullptr;
        if (!urgent_) {
            if (auto* f = running_queue_->pop()) return f;
        }
        return switch_queue();
    }
    // A progress count for the stall detector: changes at every switch and turn.
    std::uint64_t progress() const noexcept { return stats_.tasks_run + stats_.loop_turns; }
    bool sleeping() const noexcept { return sleeping_.load(std::memory_order_relaxed); }

  private:
    // The steps of one loop turn.
    bool run_ready_fibers();
    bool poll_pollers();
    bool reap_completions();
    bool fire_expired_timers();
    void sleep_until_work();

    // jump()'s body, inlined into the fiber module's hot path (fiber.cpp).
    inline void switch_to(detail::fiber_base* from, detail::fiber_base* to, bool from_ended);
    // Frees a fiber that ended, once the switch has left its stack.
    void destroy_finished(detail::fiber_base* fiber) noexcept;
    void unlink_live(detail::fiber_base* fiber) noexcept;
    void shutdown_fibers();
    void arm_wakeup_read();
    // Submits everything queued now; with get_events, also runs the kernel's
    // deferred completion work so that their CQEs can be reaped.
    void submit_queued(bool get_events = false);
    void send_wakeup() noexcept;

    // The scheduler (scheduling.cpp).
    void activate(task_queue* q) noexcept;
    detail::fiber_base* switch_queue() noexcept;
    void begin_slice(task_queue* q, time_point now) noexcept;
    void end_slice(time_point now) noexcept;
    void heap_push(task_queue* q) noexcept;
    task_queue* heap_pop() noexcept;
    void heap_sift_up(int i) noexcept;
    void heap_sift_down(int i) noexcept;
    void stamp_ready(detail::fiber_base* fiber) noexcept;
    void record_delay(detail::fiber_base* fiber) noexcept;
    void init_scheduler();
    void close_scheduler() noexcept;
    void start_turn_alarms(time_point now);
    bool arm_alarm(std::uint64_t tag, time_point deadline) noexcept;
    void arm_for_due_timers() noexcept;

    unsigned shard_id_;
    unsigned shard_count_;
    reactor_config config_;
    io_uring ring_{};
    unsigned inflight_ = 0;            // operations whose final CQE has not arrived
    unsigned device_sqes_queued_ = 0;  // block-device SQEs since the last submission
    // Hot scheduling state first: need_preempt() and pick_next_fiber() read it.
    const unsigned* preempt_tail_ = nullptr;
    unsigned preempt_seen_ = 0;
    bool urgent_ = false;          // a latency queue became runnable while another ran
    bool quota_by_clock_ = false;  // this turn's quota is checked by clock, not alarm
    bool slept_ = false;           // slept since the last turn that ran fibers
    task_queue* running_queue_ = nullptr;
    unsigned delay_sample_countdown_ = 64;
    detail::fiber_base* current_ = nullptr;
    detail::fiber_base* live_head_ = nullptr;  // every fiber not yet finished
    std::size_t live_count_ = 0;
    boost::context::detail::fcontext_t main_context_ = nullptr;
    const void* main_stack_bottom_ = nullptr;  // for AddressSanitizer's fiber support
    std::size_t main_stack_size_ = 0;
    void* main_fake_stack_ = nullptr;
    // Beside the switch's other state: every switch counts in tasks_run.
    shard_stats stats_;
    task_queue default_queue_{"default"};
    std::vector<task_queue*> queues_;  // default_queue_ first
    std::vector<std::unique_ptr<task_queue>> own_queues_;
    std::vector<task_queue*> runnable_;  // min-heap on vruntime
    std::uint64_t min_vruntime_ = 0;
    time_point slice_start_{};
    unsigned latency_queues_ = 0;
    // The preemption alarm: timeouts on a plain ring of its own (no
    // DEFER_TASKRUN), so the kernel posts their CQEs while a fiber runs.
    io_uring preempt_ring_{};
    bool quota_alarm_pending_ = false;
    time_point quota_deadline_{};
    unsigned extra_alarms_ = 0;                      // pending early alarms (latency)
    time_point extra_deadline_ = time_point::max();  // the earliest of them
    __kernel_timespec alarm_ts_{};
    std::unique_ptr<detail::stall_detector> stall_detector_;
    friend class detail::stall_detector;
    std::unique_ptr<detail::timer_heap> timers_;
    std::unique_ptr<detail::stack_pool> stacks_;
    std::vector<poller*> pollers_;

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

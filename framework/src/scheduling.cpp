// The scheduler: task queues picked by virtual runtime, the preemption
// alarm, and queue-delay sampling. Reactor members live here so that
// reactor.cpp keeps the loop and the ring.
//
// A queue, once picked, runs its fibers in order until it is empty or the
// alarm fires; only then is its CPU time read from the clock and charged
// (vruntime += runtime * 1000 / shares), and the runnable queue with the
// lowest vruntime goes next. Switching fibers inside a queue costs no clock
// read and no comparison between queues.
#include <cstring>
#include <stdexcept>
#include <string>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/scheduling.hpp"
#include "stall_detector.hpp"
#include "timer_heap.hpp"

namespace percore {

namespace {

constexpr std::uint64_t quota_alarm_tag = 1;
constexpr std::uint64_t extra_alarm_tag = 2;
constexpr unsigned max_extra_alarms = 4;
constexpr std::size_t max_queues = 256;
constexpr std::uint64_t vruntime_base = 1000;  // shares of a queue whose vruntime is its runtime

std::int64_t to_ns(time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::uint64_t ns_between(time_point from, time_point to) {
    auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
    return d > 0 ? static_cast<std::uint64_t>(d) : 0;
}

void check_shares(unsigned shares) {
    if (shares < task_queue::min_shares || shares > task_queue::max_shares) {
        throw std::invalid_argument(
            "task queue shares must be between " + std::to_string(task_queue::min_shares) +
            " and " + std::to_string(task_queue::max_shares) + ", not " + std::to_string(shares));
    }
}

// Heap order: lower vruntime first; on a tie, latency-sensitive queues first.
bool runs_before(const task_queue* a, const task_queue* b, std::uint64_t va, std::uint64_t vb,
                 bool la, bool lb) {
    (void)a;
    (void)b;
    return va < vb || (va == vb && la && !lb);
}

}  // namespace

// --- public pieces ---------------------------------------------------------------

latency latency::matters(duration bound) {
    if (bound <= duration::zero() || bound > std::chrono::seconds(10)) {
        throw std::invalid_argument(
            "latency::matters: the bound must be between 1 ns and 10 s, not " +
            std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(bound).count()) +
            " us");
    }
    return latency{bound};
}

std::uint64_t delay_histogram::quantile(double q) const noexcept {
    if (count_ == 0) return 0;
    if (q > 1) q = 1;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_));
    if (rank == 0) rank = 1;
    std::uint64_t seen = 0;
    for (unsigned i = 0; i < bucket_count; ++i) {
        seen += counts_[i];
        if (seen >= rank) return bucket_floor(i + 1);
    }
    return bucket_floor(bucket_count);
}

std::uint64_t delay_histogram::count_below_power_of_two(unsigned power) const noexcept {
    if (power >= max_power) return count_;
    unsigned end = power < 3 ? (1u << power) : (power - 2) * sub_buckets;
    std::uint64_t n = 0;
    for (unsigned i = 0; i < end && i < bucket_count; ++i) n += counts_[i];
    return n;
}

void delay_histogram::merge(const delay_histogram& other) noexcept {
    for (unsigned i = 0; i < bucket_count; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ns_ += other.sum_ns_;
}

task_queue::task_queue(std::string name, unsigned shares, latency lat)
    : name_(std::move(name)), shares_(shares), latency_(lat), sample_all_(lat.is_sensitive()) {
    check_shares(shares);
}

void task_queue::set_shares(unsigned shares) {
    check_shares(shares);
    shares_ = shares;
}

task_queue& create_task_queue(unsigned shares, latency lat, std::string name) {
    return reactor::local().create_queue(shares, lat, std::move(name));
}

const std::vector<task_queue*>& task_queues() {
    return reactor::local().queues();
}

namespace detail {
void check_queue(task_queue* queue) {
    auto* r = local_reactor;
    if (!r) throw std::logic_error("spawn called outside a percore shard");
    bool mine = false;
    for (auto* q : r->queues()) mine = mine || q == queue;
    if (!mine) {
        throw std::invalid_argument("task queue '" + queue->name() + "' does not belong to shard " +
                                    std::to_string(r->shard_id()));
    }
}
}  // namespace detail

task_queue& reactor::create_queue(unsigned shares, latency lat, std::string name) {
    if (name.empty() || name.size() > 100) {
        throw std::invalid_argument("a task queue name must have 1 to 100 characters");
    }
    for (auto* q : queues_) {
        if (q->name() == name) {
            throw std::invalid_argument("task queue '" + name + "' already exists on shard " +
                                        std::to_string(shard_id_));
        }
    }
    if (queues_.size() >= max_queues) {
        throw std::invalid_argument("shard " + std::to_string(shard_id_) + " already has " +
                                    std::to_string(max_queues) + " task queues (the limit)");
    }
    auto q = std::make_unique<task_queue>(std::move(name), shares, lat);
    q->owner_ = this;
    q->vruntime_ = min_vruntime_;
    if (lat.is_sensitive()) ++latency_queues_;
    queues_.push_back(q.get());
    own_queues_.push_back(std::move(q));
    return *queues_.back();
}

// --- set-up ------------------------------------------------------------------------

void reactor::init_scheduler() {
    default_queue_.owner_ = this;
    queues_.push_back(&default_queue_);
    runnable_.reserve(max_queues);
    int r = io_uring_queue_init(8, &preempt_ring_, 0);
    if (r < 0) {
        throw config_error("shard " + std::to_string(shard_id_) +
                           ": cannot create the preemption ring: " + std::strerror(-r));
    }
    preempt_tail_ = preempt_ring_.cq.ktail;
    preempt_seen_ = *preempt_tail_;
    if (config_.stall_threshold.count() > 0) {
        stall_detector_ = std::make_unique<detail::stall_detector>(*this, config_.stall_threshold);
    }
}

void reactor::close_scheduler() noexcept {
    stall_detector_.reset();
    if (preempt_tail_) io_uring_queue_exit(&preempt_ring_);
    preempt_tail_ = nullptr;
}

// --- the preemption alarm ------------------------------------------------------------

void reactor::start_turn_alarms(time_point now) {
    if (stall_detector_) stall_detector_->report_pending();
    // Consume the alarms that fired: that re-arms need_preempt().
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&preempt_ring_, head, cqe) {
        ++seen;
        if (cqe->user_data == quota_alarm_tag) {
            quota_alarm_pending_ = false;
        } else if (cqe->user_data == extra_alarm_tag && extra_alarms_ > 0) {
            --extra_alarms_;
        }
    }
    if (seen > 0) io_uring_cq_advance(&preempt_ring_, seen);
    preempt_seen_ = head;
    if (extra_alarms_ == 0) extra_deadline_ = time_point::max();
    // One quota alarm at a time: armed at the start of a turn if the last one
    // fired, so a busy shard makes at most one system call per quota for it.
    // Except right after a sleep: that turn is usually short (a request or a
    // reply came in), and arming a kernel timer on the wake-up's critical
    // path costs a system call and, in a VM, a timer-reprogramming exit;
    // need_preempt() reads the clock for that one turn instead.
    quota_by_clock_ = false;
    if (!quota_alarm_pending_) {
        quota_deadline_ = now + config_.task_quota;
        if (slept_) {
            quota_by_clock_ = true;
        } else {
            quota_alarm_pending_ = arm_alarm(quota_alarm_tag, quota_deadline_);
        }
    }
    slept_ = false;
    arm_for_due_timers();
}

void reactor::arm_for_due_timers() noexcept {
    // With latency-sensitive queues, timers due within the quota must not
    // wait for it: they may wake such a queue.
    if (latency_queues_ == 0 || timers_->empty()) return;
    time_point due = timers_->next_deadline();
    if (due < quota_deadline_ && due < extra_deadline_ && extra_alarms_ < max_extra_alarms &&
        arm_alarm(extra_alarm_tag, due)) {
        ++extra_alarms_;
        extra_deadline_ = due;
    }
}

bool reactor::arm_alarm(std::uint64_t tag, time_point deadline) noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&preempt_ring_);
    if (!sqe) return false;
    std::int64_t ns = to_ns(deadline);
    alarm_ts_.tv_sec = ns / 1'000'000'000;
    alarm_ts_.tv_nsec = ns % 1'000'000'000;
    // steady_clock is CLOCK_MONOTONIC, the clock of absolute io_uring timeouts.
    io_uring_prep_timeout(sqe, &alarm_ts_, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(sqe, tag);
    int r = io_uring_submit(&preempt_ring_);
    if (r != 1) {
        logger().error("shard {}: arming the preemption alarm failed: {}", shard_id_,
                       r < 0 ? std::strerror(-r) : "not submitted");
        return false;
    }
    return true;
}

// --- queues --------------------------------------------------------------------------

void reactor::activate(task_queue* q) noexcept {
    q->scheduled_ = true;
    // A queue back from idling starts at the current minimum: idle time is
    // not credit to be spent starving the others.
    if (q->vruntime_ < min_vruntime_) {
        q->vruntime_ = min_vruntime_;
    } else if (q->sample_all_) {
        // A latency-sensitive queue that ran ahead (a burst; or the OS took
        // the CPU during its slice, which is charged as wall time) comes back
        // at most its bound's worth ahead, so that it is served within about
        // its bound once the running queue used that much.
        auto bound = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(q->latency_.bound).count());
        std::uint64_t cap = min_vruntime_ + bound * vruntime_base / q->shares_;
        if (q->vruntime_ > cap) q->vruntime_ = cap;
    }
    ++q->stats_.activations;
    heap_push(q);
    if (q->sample_all_ && running_queue_ && running_queue_ != q) {
        // A fiber of another queue runs: reconsider at its next switch, and
        // preempt it if it runs past half the bound before then.
        urgent_ = true;
        time_point deadline = clock::now() + q->latency_.bound / 2;
        if (deadline < quota_deadline_ && deadline < extra_deadline_ &&
            extra_alarms_ < max_extra_alarms && arm_alarm(extra_alarm_tag, deadline)) {
            ++extra_alarms_;
            extra_deadline_ = deadline;
        }
    }
}

void reactor::begin_slice(task_queue* q, time_point now) noexcept {
    running_queue_ = q;
    slice_start_ = now;
    q->slice_tasks_ = stats_.tasks_run;
    if (q->vruntime_ > min_vruntime_) min_vruntime_ = q->vruntime_;
}

void reactor::end_slice(time_point now) noexcept {
    task_queue* q = running_queue_;
    if (!q) return;
    running_queue_ = nullptr;
    urgent_ = false;
    std::uint64_t ran = ns_between(slice_start_, now);
    q->stats_.runtime_ns += ran;
    q->stats_.tasks_run += stats_.tasks_run - q->slice_tasks_;
    q->vruntime_ += ran * vruntime_base / q->shares_;
    if (q->empty()) {
        q->scheduled_ = false;
    } else {
        ++q->stats_.preemptions;
        heap_push(q);
    }
}

detail::fiber_base* reactor::switch_queue() noexcept {
    urgent_ = false;
    if (runnable_.empty()) return running_queue_->pop();  // nullptr: back to the reactor
    time_point now = clock::now();
    end_slice(now);
    task_queue* next = heap_pop();
    begin_slice(next, now);
    // Timers armed since the turn began (a latency fiber going to sleep).
    arm_for_due_timers();
    return next->pop();
}

void reactor::heap_push(task_queue* q) noexcept {
    q->heap_index_ = static_cast<int>(runnable_.size());
    runnable_.push_back(q);
    heap_sift_up(q->heap_index_);
}

task_queue* reactor::heap_pop() noexcept {
    task_queue* top = runnable_.front();
    task_queue* last = runnable_.back();
    runnable_.pop_back();
    top->heap_index_ = -1;
    if (!runnable_.empty()) {
        runnable_[0] = last;
        last->heap_index_ = 0;
        heap_sift_down(0);
    }
    return top;
}

void reactor::heap_sift_up(int i) noexcept {
    task_queue* q = runnable_[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        task_queue* p = runnable_[parent];
        if (!runs_before(q, p, q->vruntime_, p->vruntime_, q->sample_all_, p->sample_all_)) break;
        runnable_[i] = p;
        p->heap_index_ = i;
        i = parent;
    }
    runnable_[i] = q;
    q->heap_index_ = i;
}

void reactor::heap_sift_down(int i) noexcept {
    int n = static_cast<int>(runnable_.size());
    task_queue* q = runnable_[i];
    for (;;) {
        int child = 2 * i + 1;
        if (child >= n) break;
        task_queue* c = runnable_[child];
        if (child + 1 < n) {
            task_queue* d = runnable_[child + 1];
            if (runs_before(d, c, d->vruntime_, c->vruntime_, d->sample_all_, c->sample_all_)) {
                ++child;
                c = d;
            }
        }
        if (!runs_before(c, q, c->vruntime_, q->vruntime_, c->sample_all_, q->sample_all_)) break;
        runnable_[i] = c;
        c->heap_index_ = i;
        i = child;
    }
    runnable_[i] = q;
    q->heap_index_ = i;
}

// --- queue delay sampling ---------------------------------------------------------------

void reactor::stamp_ready(detail::fiber_base* fiber) noexcept {
    delay_sample_countdown_ = 64;
    fiber->ready_at_ns_ = to_ns(clock::now());
}

void reactor::record_delay(detail::fiber_base* fiber) noexcept {
    std::int64_t waited = to_ns(clock::now()) - fiber->ready_at_ns_;
    fiber->ready_at_ns_ = 0;
    fiber->queue_->stats_.delay.record(waited > 0 ? static_cast<std::uint64_t>(waited) : 0);
}

}  // namespace percore

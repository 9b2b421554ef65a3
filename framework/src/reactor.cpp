// The reactor loop. The hot path is run(): one screen, four steps, and sleep
// only when no step found work.
#include "percore/reactor.hpp"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "percore/detail/block_cache.hpp"
#include "percore/errors.hpp"
#include "percore/log.hpp"
#include "stack_pool.hpp"
#include "stall_detector.hpp"
#include "timer_heap.hpp"
#include "uring_setup.hpp"

namespace percore {

thread_local constinit reactor* detail::local_reactor [[gnu::tls_model("initial-exec")]] = nullptr;
using detail::local_reactor;

namespace {
std::vector<reactor*> shard_table;

std::uint64_t nanoseconds(duration d) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}
}  // namespace

// Keeps a read armed on the wake-up eventfd: a remote shard's write completes
// it, which ends the reactor's wait in the ring.
class reactor::wakeup_handler final : public completion_handler {
  public:
    explicit wakeup_handler(reactor& r) : reactor_(r) {}
    void complete(int result, std::uint32_t) noexcept override {
        ++reactor_.stats_.wakeups_received;
        if (result == -ECANCELED || reactor_.stop_requested()) return;
        reactor_.arm_wakeup_read();
    }

  private:
    reactor& reactor_;
};

reactor::reactor(unsigned shard_id, unsigned shard_count, const reactor_config& config)
    : shard_id_(shard_id),
      shard_count_(shard_count),
      config_(config),
      timers_(std::make_unique<detail::timer_heap>()),
      stacks_(std::make_unique<detail::stack_pool>(config.stack_size)) {
    if (local_reactor) throw std::logic_error("a reactor already runs on this thread");
    int r = setup_ring(ring_, config_.ring_depth);
    if (r < 0) throw config_error(explain_io_uring_failure(-r));
    io_uring_register_ring_fd(&ring_);  // saves an fd lookup per enter; optional
    wakeup_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wakeup_fd_ < 0) {
        int err = errno;
        io_uring_queue_exit(&ring_);
        throw io_error(err, "eventfd for shard " + std::to_string(shard_id));
    }
    wakeup_handler_ = std::make_unique<wakeup_handler>(*this);
    pthread_attr_t attributes;
    if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
        void* bottom = nullptr;
        pthread_attr_getstack(&attributes, &bottom, &main_stack_size_);
        main_stack_bottom_ = bottom;
        pthread_attr_destroy(&attributes);
    }
    try {
        init_scheduler();
    } catch (...) {
        io_uring_queue_exit(&ring_);
        ::close(wakeup_fd_);
        throw;
    }
    local_reactor = this;
    detail::local_block_cache.open();
}

reactor::~reactor() {
    if (live_count_ > 0) {
        logger().error("shard {}: {} fibers never finished; their stacks are leaked", shard_id_,
                       live_count_);
    }
    close_scheduler();
    io_uring_queue_exit(&ring_);
    ::close(wakeup_fd_);
    if (local_reactor == this) {
        local_reactor = nullptr;
        detail::local_block_cache.close();
    }
}

reactor& reactor::local() {
    if (!local_reactor) throw std::logic_error("no percore reactor runs on this thread");
    return *local_reactor;
}

reactor& reactor::of_shard(unsigned shard) {
    if (shard >= shard_table.size() || !shard_table[shard]) {
        throw std::out_of_range("no shard " + std::to_string(shard) + " (shard count " +
                                std::to_string(shard_table.size()) + ")");
    }
    return *shard_table[shard];
}

void reactor::set_shard_table(std::vector<reactor*> table) {
    shard_table = std::move(table);
}

unsigned this_shard_id() noexcept {
    return local_reactor ? local_reactor->shard_id() : 0;
}
unsigned shard_count() noexcept {
    return local_reactor ? local_reactor->shard_count() : 1;
}

// --- the loop ------------------------------------------------------------------

void reactor::run() {
    arm_wakeup_read();
    time_point last_work = clock::now();
    while (!stop_requested()) {
        ++stats_.loop_turns;
        bool worked = run_ready_fibers();
        worked |= poll_pollers();
        worked |= reap_completions();
        worked |= fire_expired_timers();
        // SQEs still queued with nothing runnable were left for the sleep,
        // whose enter submits them (see reap_completions).
        if (!runnable_.empty() || (worked && io_uring_sq_ready(&ring_) == 0)) {
            if (config_.idle_poll.count() > 0) last_work = clock::now();
            continue;
        }
        if (config_.idle_poll.count() > 0 && clock::now() - last_work < config_.idle_poll) continue;
        sleep_until_work();
        last_work = clock::now();
    }
    shutdown_fibers();
}

bool reactor::run_ready_fibers() {
    if (runnable_.empty()) return false;
    time_point start = clock::now();
    start_turn_alarms(start);
    task_queue* q = heap_pop();
    begin_slice(q, start);
    // Fibers switch among themselves (queue by queue) until none is ready or
    // the alarm asks to preempt; then the last one jumps back here.
    jump(nullptr, q->pop());
    time_point end = clock::now();
    end_slice(end);
    stats_.busy_ns += nanoseconds(end - start);
    return true;
}

bool reactor::poll_pollers() {
    bool worked = false;
    for (auto* p : pollers_) worked |= p->poll();
    return worked;
}

bool reactor::reap_completions() {
    if (inflight_ == 0 && io_uring_sq_ready(&ring_) == 0) return false;
    // Enter the kernel only when there is something to submit, or when it
    // flagged deferred completion work (IORING_SETUP_TASKRUN_FLAG) or a CQ
    // overflow: an idle turn with I/O merely in flight costs no system call.
    unsigned kernel_flags = IO_URING_READ_ONCE(*ring_.sq.kflags);
    const bool kernel_has_work = kernel_flags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW);
    // Nothing runnable and no completion waiting: the turn will end in
    // sleep_until_work, whose io_uring_enter submits as well, so a request
    // answered in one turn costs one system call, not two (submit, then
    // sleep). Not when busy-polling, which does not sleep.
    if (io_uring_sq_ready(&ring_) > 0 && !kernel_has_work && runnable_.empty() &&
        config_.idle_poll.count() == 0) {
        return false;
    }
    // One system call submits this turn's batch and, with DEFER_TASKRUN,
    // runs the deferred completion work so the CQEs below are there.
    if (io_uring_sq_ready(&ring_) > 0 || kernel_has_work) submit_queued(true);
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        // The next completion's handler is likely cold (one per connection):
        // start loading it now. Past the tail the slot holds a stale
        // pointer, which a prefetch ignores (it never faults).
        const unsigned after = io_uring_cqe_index(&ring_, head + 1, ring_.cq.ring_mask);
        __builtin_prefetch(io_uring_cqe_get_data(&ring_.cq.cqes[after]));
        auto* handler = static_cast<completion_handler*>(io_uring_cqe_get_data(cqe));
        if (!handler) continue;
        if (!(cqe->flags & IORING_CQE_F_MORE)) --inflight_;
        handler->complete(cqe->res, cqe->flags);
    }
    io_uring_cq_advance(&ring_, seen);
    stats_.io_completed += seen;
    return seen > 0;
}

bool reactor::fire_expired_timers() {
    if (timers_->empty() || timers_->next_deadline() > clock::now()) return false;
    stats_.timers_fired += timers_->fire_expired(clock::now());
    return true;
}

void reactor::sleep_until_work() {
    // Announce sleep, then look once more: a shard that published work before
    // seeing the flag is caught here, one that sees it sends a wake-up.
    sleeping_.store(true, std::memory_order_seq_cst);
    bool work_arrived = stop_requested();
    for (auto* p : pollers_) work_arrived = work_arrived || p->has_work();
    __kernel_timespec timeout{};
    __kernel_timespec* timeout_ptr = nullptr;
    if (!work_arrived && !timers_->empty()) {
        auto delay = timers_->next_deadline() - clock::now();
        if (delay <= duration::zero()) {
            work_arrived = true;
        } else {
            auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(delay).count();
            timeout.tv_sec = ns / 1'000'000'000;
            timeout.tv_nsec = ns % 1'000'000'000;
            timeout_ptr = &timeout;
        }
    }
    if (work_arrived) {
        sleeping_.store(false, std::memory_order_relaxed);
        if (io_uring_sq_ready(&ring_) > 0) submit_queued();  // left for this sleep
        return;
    }
    time_point start = clock::now();
    ++stats_.sleeps;
    ++stats_.io_enter_calls;
    stats_.io_submitted += io_uring_sq_ready(&ring_);
    device_sqes_queued_ = 0;
    io_uring_cqe* cqe = nullptr;
    int r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, timeout_ptr, nullptr);
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        logger().error("shard {}: waiting in io_uring failed: {}", shard_id_, std::strerror(-r));
    }
    sleeping_.store(false, std::memory_order_relaxed);
    slept_ = true;
    stats_.idle_ns += nanoseconds(clock::now() - start);
}

// --- I/O -------------------------------------------------------------------------

io_uring_sqe* reactor::get_sqe(completion_handler* handler, unsigned then_more) {
    if (io_uring_sq_space_left(&ring_) < 1 + then_more) submit_queued();
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe)
        throw io_error(EBUSY,
                       "io_uring submission queue full on shard " + std::to_string(shard_id_));
    io_uring_sqe_set_data(sqe, handler);
    if (handler) ++inflight_;
    return sqe;
}

void reactor::submit_queued(bool get_events) {
    stats_.io_submitted += io_uring_sq_ready(&ring_);
    ++stats_.io_enter_calls;
    device_sqes_queued_ = 0;
    // Errors of single operations come as CQEs; EBUSY/EAGAIN (no room for
    // completions yet) leave the SQEs queued for the next enter.
    int r = get_events ? io_uring_submit_and_get_events(&ring_) : io_uring_submit(&ring_);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        logger().error("shard {}: io_uring_enter failed: {}", shard_id_, std::strerror(-r));
    }
}

void reactor::cancel_io_on_fd(int fd) {
    io_uring_sqe* sqe = get_sqe(nullptr, 0);
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
}

void reactor::arm_wakeup_read() {
    io_uring_sqe* sqe = get_sqe(wakeup_handler_.get(), 0);
    io_uring_prep_read(sqe, wakeup_fd_, &wakeup_buffer_, sizeof(wakeup_buffer_), 0);
}

void reactor::send_wakeup() noexcept {
    std::uint64_t one = 1;
    // Non-blocking eventfd: a full counter (never, in practice) just means a
    // wake-up is already pending.
    [[maybe_unused]] auto n = ::write(wakeup_fd_, &one, sizeof(one));
}

void reactor::request_stop() noexcept {
    stop_requested_.store(true, std::memory_order_seq_cst);
    if (sleeping_.exchange(false)) send_wakeup();
}

void reactor::add_poller(poller* p) {
    pollers_.push_back(p);
}

void reactor::remove_poller(poller* p) noexcept {
    std::erase(pollers_, p);
}

// --- fibers' bookkeeping and shutdown ----------------------------------------------------

void reactor::on_fiber_created(detail::fiber_base* fiber) noexcept {
    fiber->prev_live_ = nullptr;
    fiber->next_live_ = live_head_;
    if (live_head_) live_head_->prev_live_ = fiber;
    live_head_ = fiber;
    ++live_count_;
    ++stats_.fibers_spawned;
}

void reactor::unlink_live(detail::fiber_base* fiber) noexcept {
    (fiber->prev_live_ ? fiber->prev_live_->next_live_ : live_head_) = fiber->next_live_;
    if (fiber->next_live_) fiber->next_live_->prev_live_ = fiber->prev_live_;
    --live_count_;
}

void reactor::shutdown_fibers() {
    // Fibers waiting on the kernel get their operations cancelled; every
    // other waiting fiber is resumed with shutdown_error so it unwinds.
    const time_point give_up = clock::now() + std::chrono::seconds(5);
    bool cancel_sent = false;
    while (live_count_ > 0 && clock::now() < give_up) {
        for (auto* f = live_head_; f; f = f->next_live_) {
            if (!f->interrupted_) detail::interrupt(f);
        }
        bool ran = run_ready_fibers();
        if (!ran && inflight_ > 0 && !cancel_sent) {
            io_uring_prep_cancel(get_sqe(nullptr, 0), nullptr, IORING_ASYNC_CANCEL_ANY);
            cancel_sent = true;
        }
        reap_completions();
        fire_expired_timers();
        if (runnable_.empty() && inflight_ > 0) {
            __kernel_timespec ts{0, 10'000'000};
            io_uring_cqe* cqe = nullptr;
            io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
            cancel_sent = false;  // new operations may have been started while unwinding
        }
    }
    if (live_count_ > 0) {
        for (auto* f = live_head_; f; f = f->next_live_) {
            logger().error("shard {}: fiber '{}' did not finish at shutdown", shard_id_, f->name());
        }
    }
}

}  // namespace percore

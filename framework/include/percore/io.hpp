// One io_uring operation from a fiber: prepare an SQE, let the shard submit it
// with its next batch, and suspend until the completion. The building block
// of the network and file layers; app code rarely uses it directly.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <optional>

#include "percore/clock.hpp"
#include "percore/detail/fiber_base.hpp"
#include "percore/timer.hpp"

namespace percore {

// Receives the completions of one submitted operation. A multishot operation
// calls complete() once per CQE, the last one without IORING_CQE_F_MORE.
class completion_handler {
  public:
    virtual void complete(int result, std::uint32_t flags) noexcept = 0;

  protected:
    ~completion_handler() = default;
};

// A fiber waiting for a single-shot operation.
class fiber_completion final : public completion_handler {
  public:
    fiber_completion() : waiter_(detail::current_fiber()) {}
    void complete(int result, std::uint32_t flags) noexcept override {
        result_ = result;
        flags_ = flags;
        done_ = true;
        detail::make_ready(waiter_);
    }
    // Suspends until complete() ran. Uninterruptible: the kernel owns buffers
    // of the fiber until then (shutdown cancels the operation instead).
    void wait() {
        while (!done_) detail::suspend_uninterruptible();
    }
    int result() const noexcept { return result_; }
    std::uint32_t flags() const noexcept { return flags_; }

  private:
    detail::fiber_base* waiter_;
    int result_ = 0;
    std::uint32_t flags_ = 0;
    bool done_ = false;
};

// An SQE of the current shard's ring, with user_data set to `handler`
// (nullptr: the completion is ignored). Flushes the queue when it is full;
// `then_more` SQEs are guaranteed to follow it in the same submission (for
// linked operations).
io_uring_sqe* get_sqe(completion_handler* handler, unsigned then_more = 0);

// Prepares an operation with prep(sqe), submits it, and suspends the calling
// fiber until it completes; returns cqe->res (>= 0, or -errno).
template <typename Prepare>
int submit_io(Prepare&& prepare) {
    fiber_completion c;
    prepare(get_sqe(&c));
    c.wait();
    return c.result();
}

namespace detail {
// Arms `alarm` to cancel the operation whose user_data is `handler` at
// `deadline`; sets `expired` when it does.
void arm_cancel_at(timer& alarm, completion_handler* handler, time_point deadline, bool& expired);
}  // namespace detail

// As submit_io, but the operation is cancelled at `deadline`; it then returns
// -ETIME (not -ECANCELED) so callers can tell a deadline from an explicit
// cancel. The deadline is a shard timer, not a linked kernel timeout: arming
// and cancelling one costs tens of nanoseconds, against an extra SQE and a
// kernel hrtimer per operation (measured: ~9 % of the CPU of kv at pipeline 1,
// whose every read carries its --idle-timeout).
template <typename Prepare>
int submit_io(Prepare&& prepare, std::optional<time_point> deadline) {
    if (!deadline) return submit_io(std::forward<Prepare>(prepare));
    fiber_completion c;
    prepare(get_sqe(&c));
    bool expired = false;
    timer alarm;  // destroyed (disarmed) first
    detail::arm_cancel_at(alarm, &c, *deadline, expired);
    c.wait();
    if (c.result() == -ECANCELED && expired) return -ETIME;
    return c.result();
}

// Cancels every operation on `fd` in this shard's ring (accept, recv...):
// their waiters see -ECANCELED. Used to close listeners and connections.
void cancel_io_on_fd(int fd);

}  // namespace percore

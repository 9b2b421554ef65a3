#include "percore/io.hpp"

#include "percore/reactor.hpp"

namespace percore {

io_uring_sqe* get_sqe(completion_handler* handler, unsigned then_more) {
    return reactor::local().get_sqe(handler, then_more);
}

void cancel_io_on_fd(int fd) {
    reactor::local().cancel_io_on_fd(fd);
}

namespace detail {

void link_deadline(io_uring_sqe* sqe, __kernel_timespec* ts, time_point deadline) {
    // steady_clock is CLOCK_MONOTONIC on Linux, the clock of an absolute
    // io_uring timeout.
    auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    ts->tv_sec = ns / 1'000'000'000;
    ts->tv_nsec = ns % 1'000'000'000;
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe* timeout = reactor::local().get_sqe(nullptr, 0);
    io_uring_prep_link_timeout(timeout, ts, IORING_TIMEOUT_ABS);
}

}  // namespace detail
}  // namespace percore

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

void arm_cancel_at(timer& alarm, completion_handler* handler, time_point deadline, bool& expired) {
    alarm.set_callback([handler, &expired] {
        expired = true;
        io_uring_prep_cancel(reactor::local().get_sqe(nullptr, 0), handler, 0);
    });
    alarm.arm(deadline);
}

}  // namespace detail
}  // namespace percore

// Connections over io_uring. The hot path is connection::read / write_all:
// reads wait on a poll kept armed per connection and recv directly (or go
// through the ring, per net_tuning); writes try send() first and hand the
// ring only what would block.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/io.hpp"
#include "percore/net.hpp"
#include "percore/reactor.hpp"
#include "socket_ops.hpp"

namespace percore {

using detail::describe_peer;
using detail::query_address;
using detail::set_option;
using detail::throw_failure;
using detail::would_block;

net_tuning& default_net_tuning() noexcept {
    static net_tuning tuning;
    return tuning;
}

// The handler of a connection's multishot poll (recv_policy::readiness). The
// kernel posts a completion each time data (or EOF, or an error) arrives;
// `readable` then tells read() a recv is worth trying. A completion may be
// stale (its data already read): that costs one recv that would block, never
// a missed wake-up, since the poll stays armed across reads.
class connection::readiness final : public completion_handler {
  public:
    explicit readiness(connection& owner) noexcept : owner_(&owner) {}
    void set_owner(connection& owner) noexcept { owner_ = &owner; }

    void arm(int fd) {
        io_uring_prep_poll_multishot(get_sqe(this), fd, POLLIN | POLLRDHUP);
        armed = true;
    }
    void complete(int result, std::uint32_t flags) noexcept override {
        readable = true;
        // States that stay (EOF, a reset) post no further completions:
        // once reported, recv must always be tried.
        if (result > 0 && (result & (POLLRDHUP | POLLHUP | POLLERR))) stays_readable = true;
        if (!(flags & IORING_CQE_F_MORE)) {
            armed = false;  // cancelled, failed, or the kernel dropped it: read() re-arms
            if (result < 0) error = -result;
            if (owner_->closer_)
                detail::make_ready(static_cast<detail::fiber_base*>(owner_->closer_));
        }
        if (waiter) detail::make_ready(waiter);
    }

    bool armed = false;           // the poll is in the kernel
    bool readable = false;        // data may be queued: try recv
    bool stays_readable = false;  // EOF or an error was reported: readable for good
    int error = 0;  // the poll ended with this errno (ECANCELED: closed or shard stopping)
    detail::fiber_base* waiter = nullptr;  // the fiber in wait_readable()

  private:
    connection* owner_;
};

void connection::readiness_deleter::operator()(readiness* r) const noexcept {
    delete r;
}

connection::connection(connection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      last_read_full_(other.last_read_full_),
      readiness_(std::move(other.readiness_)) {
    other.read_alarm_.cancel();  // see operator=
    if (readiness_) readiness_->set_owner(*this);
}

connection& connection::operator=(connection&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::exchange(other.fd_, -1);
        last_read_full_ = other.last_read_full_;
        readiness_ = std::move(other.readiness_);
        if (readiness_) readiness_->set_owner(*this);
        // read_alarm_ points at its own connection: each keeps its own, and
        // the other's (armed lazily, no read in flight) is let go.
        other.read_alarm_.cancel();
    }
    return *this;
}

connection::~connection() {
    close();
}

template <typename Prepare>
int connection::ring_op(Prepare&& prepare, std::optional<time_point> deadline) {
    ++inflight_;
    int r = submit_io(std::forward<Prepare>(prepare), deadline);
    op_done();
    return r;
}

void connection::op_done() noexcept {
    if (--inflight_ == 0 && closer_) detail::make_ready(static_cast<detail::fiber_base*>(closer_));
}

template <typename Prepare>
int connection::read_op(Prepare&& prepare, std::optional<time_point> deadline) {
    if (!deadline || read_waiting_) return ring_op(std::forward<Prepare>(prepare), deadline);
    // Usually armed already, at an earlier deadline (the last read's): it
    // will move on when it fires. Armed only when missing or too late, and
    // before the SQE, so nothing can throw once the kernel owns `c`.
    arm_read_alarm(*deadline);
    fiber_completion c;
    prepare(get_sqe(&c));
    read_waiting_ = &c;
    ++inflight_;
    c.wait();
    read_waiting_ = nullptr;
    op_done();
    if (c.result() == -ECANCELED && read_expired_) return -ETIME;
    return c.result();
}

void connection::arm_read_alarm(time_point deadline) {
    read_deadline_ = deadline;
    read_expired_ = false;
    if (!read_alarm_.armed() || deadline < read_alarm_.deadline()) {
        read_alarm_.set_callback([this] { on_read_alarm(); });
        read_alarm_.arm(deadline);
    }
}

void connection::on_read_alarm() {
    detail::fiber_base* ready_waiter = readiness_ ? readiness_->waiter : nullptr;
    if (!read_waiting_ && !ready_waiter) return;  // no read waits: stay disarmed until the next
    if (clock::now() < read_deadline_) {
        read_alarm_.arm(read_deadline_);
        return;
    }
    read_expired_ = true;
    if (ready_waiter) {
        detail::make_ready(ready_waiter);  // the poll stays armed for the next read
    } else {
        io_uring_prep_cancel(reactor::local().get_sqe(nullptr, 0), read_waiting_, 0);
    }
}

void connection::throw_error(int error, const char* what) const {
    if (error == ECANCELED && closing_) {
        throw io_error(ECANCELED, std::string(what) + ": connection closed meanwhile");
    }
    throw_failure(error, std::string(what) + " (peer " + describe_peer(fd_) + ")");
}

std::size_t connection::read(std::span<char> buffer, std::optional<time_point> deadline) {
    if (fd_ < 0) throw io_error(EBADF, "read on a closed connection");
    if (buffer.empty()) return 0;
    const net_tuning& tuning = default_net_tuning();
    if (tuning.recv == net_tuning::recv_policy::readiness) return read_when_ready(buffer, deadline);
    bool speculate = tuning.recv == net_tuning::recv_policy::always ||
                     (tuning.recv == net_tuning::recv_policy::after_full && last_read_full_);
    bool likely_empty = !last_read_full_;
    if (speculate) {
        ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n >= 0) {
            last_read_full_ = static_cast<std::size_t>(n) == buffer.size();
            return static_cast<std::size_t>(n);
        }
        if (!would_block(errno)) throw_error(errno, "recv");
        likely_empty = true;
    }
    bool poll_first = tuning.poll_first && likely_empty;
    int r = read_op(
        [&](io_uring_sqe* sqe) {
            io_uring_prep_recv(sqe, fd_, buffer.data(), buffer.size(), 0);
            if (poll_first) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
        },
        deadline);
    if (r < 0) throw_error(-r, "recv");
    if (closing_) throw_error(ECANCELED, "recv");
    last_read_full_ = static_cast<std::size_t>(r) == buffer.size();
    return static_cast<std::size_t>(r);
}

std::size_t connection::read_when_ready(std::span<char> buffer,
                                        std::optional<time_point> deadline) {
    if (!readiness_) readiness_.reset(new readiness(*this));
    readiness& ready = *readiness_;
    for (;;) {
        if (ready.readable) {
            ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
            if (n >= 0) {
                // Short of the buffer: TCP and Unix stream recvs copy until
                // the queue is empty, so data arriving after this recv posts
                // a new completion. EOF may already be queued behind the
                // data, though, and posts none: stays_readable covers it.
                if (static_cast<std::size_t>(n) < buffer.size() && !ready.stays_readable) {
                    ready.readable = false;
                }
                return static_cast<std::size_t>(n);
            }
            if (!would_block(errno)) throw_error(errno, "recv");
            ready.readable = false;
        }
        if (ready.error) throw_error(ready.error, "poll for data");
        wait_readable(deadline);
    }
}

void connection::wait_readable(std::optional<time_point> deadline) {
    readiness& ready = *readiness_;
    if (!ready.armed) ready.arm(fd_);
    if (deadline) {
        arm_read_alarm(*deadline);
    } else {
        read_alarm_.cancel();  // an earlier read's deadline must not end this wait
        read_expired_ = false;
    }
    ready.waiter = detail::current_fiber();
    // Uninterruptible, as ring reads are: a stopping shard cancels the poll,
    // whose last completion ends this wait with error ECANCELED.
    while (!ready.readable && !ready.error && !read_expired_) detail::suspend_uninterruptible();
    ready.waiter = nullptr;
    if (closer_) detail::make_ready(static_cast<detail::fiber_base*>(closer_));
    if (read_expired_ && !ready.readable) throw_error(ETIME, "recv");
    if (closing_) throw_error(ECANCELED, "recv");
}

void connection::write_all(std::string_view data, std::optional<time_point> deadline) {
    if (fd_ < 0) throw io_error(EBADF, "write on a closed connection");
    const char* p = data.data();
    std::size_t left = data.size();
    if (left > 0 && default_net_tuning().send_first) {
        ssize_t n = ::send(fd_, p, left, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) {
            p += n;
            left -= static_cast<std::size_t>(n);
        } else if (!would_block(errno)) {
            throw_error(errno, "send");
        }
    }
    while (left > 0) {
        int r =
            ring_op([&](io_uring_sqe* sqe) { io_uring_prep_send(sqe, fd_, p, left, MSG_NOSIGNAL); },
                    deadline);
        if (r < 0) throw_error(-r, "send");
        p += r;
        left -= static_cast<std::size_t>(r);
    }
}

void connection::write_all(std::span<const iovec> pieces) {
    if (fd_ < 0) throw io_error(EBADF, "write on a closed connection");
    std::size_t total = 0;
    for (const auto& piece : pieces) total += piece.iov_len;
    if (total == 0) return;
    if (pieces.size() == 1) {
        write_all(
            std::string_view(static_cast<const char*>(pieces[0].iov_base), pieces[0].iov_len));
        return;
    }
    // sendmsg takes at most IOV_MAX pieces; a mutable copy lets a partial
    // send resume in the middle of a piece.
    std::vector<iovec> rest(pieces.begin(), pieces.end());
    std::size_t first = 0;
    auto advance = [&](std::size_t n) {
        total -= n;
        while (n > 0 && first < rest.size()) {
            std::size_t step = std::min(n, rest[first].iov_len);
            rest[first].iov_base = static_cast<char*>(rest[first].iov_base) + step;
            rest[first].iov_len -= step;
            n -= step;
            if (rest[first].iov_len == 0) ++first;
        }
        while (first < rest.size() && rest[first].iov_len == 0) ++first;
    };
    auto header = [&] {
        msghdr msg{};
        msg.msg_iov = rest.data() + first;
        msg.msg_iovlen = std::min<std::size_t>(rest.size() - first, IOV_MAX);
        return msg;
    };
    if (default_net_tuning().send_first) {
        msghdr msg = header();
        ssize_t n = ::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) {
            advance(static_cast<std::size_t>(n));
        } else if (!would_block(errno)) {
            throw_error(errno, "sendmsg");
        }
    }
    while (total > 0) {
        msghdr msg = header();
        int r =
            ring_op([&](io_uring_sqe* sqe) { io_uring_prep_sendmsg(sqe, fd_, &msg, MSG_NOSIGNAL); },
                    std::nullopt);
        if (r < 0) throw_error(-r, "sendmsg");
        advance(static_cast<std::size_t>(r));
    }
}

void connection::shutdown(int how) {
    if (fd_ < 0) throw io_error(EBADF, "shutdown on a closed connection");
    if (::shutdown(fd_, how) != 0 && errno != ENOTCONN) {
        throw io_error(errno, "shutdown (peer " + describe_peer(fd_) + ")");
    }
}

void connection::close() noexcept {
    read_alarm_.cancel();
    if (fd_ < 0) return;
    quiesce();
    ::close(fd_);
    fd_ = -1;
}

int connection::release() noexcept {
    read_alarm_.cancel();
    if (fd_ < 0) return -1;
    quiesce();
    // The next owner starts afresh: no poll armed, readable until told otherwise.
    readiness_.reset();
    closing_ = false;
    last_read_full_ = false;
    return std::exchange(fd_, -1);
}

void connection::quiesce() noexcept {
    // An armed poll counts as an operation in flight: the kernel holds its
    // handler until the last completion (the cancel's), and a fiber waiting
    // in wait_readable() must let go of readiness_ too.
    auto busy = [this] {
        return inflight_ > 0 || (readiness_ && (readiness_->armed || readiness_->waiter));
    };
    if (busy()) {
        closing_ = true;
        if (detail::current_fiber()) {
            // Cancel while fd_ is still open (the cancel looks the file up
            // when the ring submits it), then let the waiters unwind.
            cancel_io_on_fd(fd_);
            closer_ = detail::current_fiber();
            while (busy()) detail::suspend_uninterruptible();
            closer_ = nullptr;
        } else {
            ::shutdown(fd_, SHUT_RDWR);  // off the shards: at least wake the waiters
        }
    }
    if (readiness_ && readiness_->armed) {
        // Closed off the shards with the poll armed: the kernel may still post
        // to the handler, so it is leaked rather than freed early.
        static_cast<void>(readiness_.release());
    }
}

socket_address connection::peer_address() const {
    if (fd_ < 0) throw io_error(EBADF, "peer_address of a closed connection");
    return query_address(fd_, true);
}

socket_address connection::local_address() const {
    if (fd_ < 0) throw io_error(EBADF, "local_address of a closed connection");
    return query_address(fd_, false);
}

void connection::set_nodelay(bool on) {
    if (fd_ < 0) throw io_error(EBADF, "set_nodelay on a closed connection");
    set_option(fd_, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0, "TCP_NODELAY");
}

connection connect(const socket_address& address, std::optional<duration> timeout) {
    int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw io_error(errno, "socket for connecting to " + address.to_string());
    connection conn(fd);
    std::optional<time_point> deadline;
    if (timeout) deadline = clock::now() + *timeout;
    int r = submit_io(
        [&](io_uring_sqe* sqe) {
            io_uring_prep_connect(sqe, fd, address.native(), address.length());
        },
        deadline);
    if (r < 0) throw_failure(-r, "connect to " + address.to_string());
    if (!address.is_unix()) conn.set_nodelay(true);
    return conn;
}

}  // namespace percore

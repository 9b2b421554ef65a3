// Listeners: one per shard with SO_REUSEPORT, a multishot accept feeding a
// bounded queue of accepted sockets, and listen() itself.
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <string>

#include "percore/detail/wait_list.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/io.hpp"
#include "percore/log.hpp"
#include "percore/net.hpp"
#include "percore/reactor.hpp"
#include "socket_ops.hpp"

namespace percore {

using detail::query_address;
using detail::set_option;
using detail::throw_failure;

// Shared by the listener and the fibers in accept(), and the completion
// handler of the multishot accept: it must outlive the kernel's request.
struct listener::state final : completion_handler {
    int fd = -1;
    socket_address address;
    listen_options options;
    std::deque<int> accepted;
    detail::wait_list waiters;
    bool multishot = true;
    bool armed = false;    // a multishot accept is in the kernel
    bool pausing = false;  // its cancel (queue full) is on the way
    bool closed = false;
    int pending_error = 0;
    unsigned single_inflight = 0;
    detail::fiber_base* closer = nullptr;
    std::shared_ptr<state> keep_alive;  // set when closed off the shards with a request in flight

    ~state() {
        for (int fd : accepted) ::close(fd);
    }

    void arm() {
        io_uring_sqe* sqe = get_sqe(this);
        io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_CLOEXEC);
        armed = true;
    }

    void complete(int result, std::uint32_t flags) noexcept override {
        bool more = flags & IORING_CQE_F_MORE;
        if (!more) {
            armed = false;
            pausing = false;
        }
        if (result >= 0) {
            if (closed) {
                ::close(result);
            } else {
                accepted.push_back(result);
                waiters.wake_one();
                if (armed && !pausing && accepted.size() >= options.accept_queue) {
                    // Full: stop the multishot; the kernel's backlog holds the rest.
                    io_uring_sqe* sqe = get_sqe(nullptr);
                    io_uring_prep_cancel(sqe, this, 0);
                    pausing = true;
                }
            }
        } else if (!closed && result != -ECANCELED) {
            if (result == -EINVAL && more == false && multishot) {
                logger().info("multishot accept refused by the kernel on {}: one accept per call",
                              address.to_string());
                multishot = false;
            } else {
                pending_error = -result;
            }
        }
        if (!more) {
            waiters.wake_all();  // somebody must re-arm, or see the error
            if (closer && single_inflight == 0) detail::make_ready(closer);
            if (keep_alive) {
                auto last = std::move(keep_alive);  // may delete this
                return;
            }
        }
    }
};

listener::listener(listener&& other) noexcept = default;

listener& listener::operator=(listener&& other) noexcept {
    if (this != &other) {
        close();
        state_ = std::move(other.state_);
    }
    return *this;
}

listener::~listener() {
    close();
}

bool listener::is_open() const noexcept {
    return state_ && !state_->closed;
}

bool listener::multishot() const noexcept {
    return state_ && state_->multishot;
}

socket_address listener::local_address() const {
    if (!state_) throw io_error(EBADF, "local_address of an empty listener");
    return state_->address;
}

connection listener::accept(std::optional<time_point> deadline) {
    if (!state_) throw io_error(EBADF, "accept on an empty listener");
    std::shared_ptr<state> s = state_;  // keeps it alive if the listener goes meanwhile
    auto closed_error = [&] {
        return io_error(ECANCELED, "accept on " + s->address.to_string() + ": listener closed");
    };
    int fd = -1;
    for (;;) {
        if (s->closed) throw closed_error();
        if (!s->accepted.empty()) {
            fd = s->accepted.front();
            s->accepted.pop_front();
            if (s->multishot && !s->armed && s->accepted.size() < s->options.accept_queue / 2)
                s->arm();
            break;
        }
        if (int e = std::exchange(s->pending_error, 0)) {
            throw_failure(e, "accept on " + s->address.to_string());
        }
        if (!s->multishot) {
            ++s->single_inflight;
            int r = submit_io(
                [&](io_uring_sqe* sqe) {
                    io_uring_prep_accept(sqe, s->fd, nullptr, nullptr, SOCK_CLOEXEC);
                },
                deadline);
            if (--s->single_inflight == 0 && !s->armed && s->closer) detail::make_ready(s->closer);
            if (r >= 0 && s->closed) ::close(r);
            if (s->closed) throw closed_error();
            if (r < 0) throw_failure(-r, "accept on " + s->address.to_string());
            fd = r;
            break;
        }
        if (!s->armed) s->arm();
        if (!s->waiters.wait(1, deadline)) {
            throw timeout_error("accept on " + s->address.to_string() + ": deadline passed");
        }
    }
    connection conn(fd);
    if (s->options.nodelay && !s->address.is_unix()) conn.set_nodelay(true);
    maybe_yield();  // a burst of queued connections must not starve the shard
    return conn;
}

void listener::close() noexcept {
    if (!state_ || state_->closed) return;
    state& s = *state_;
    s.closed = true;
    for (int fd : s.accepted) ::close(fd);
    s.accepted.clear();
    s.waiters.wake_all();
    if (s.armed || s.single_inflight > 0) {
        if (detail::current_fiber()) {
            cancel_io_on_fd(s.fd);  // the fd stays open until the kernel let go
            s.closer = detail::current_fiber();
            while (s.armed || s.single_inflight > 0) detail::suspend_uninterruptible();
            s.closer = nullptr;
        } else {
            ::shutdown(s.fd, SHUT_RDWR);  // wakes the accepts; the state lives until their end
            s.keep_alive = state_;
        }
    }
    ::close(s.fd);
    s.fd = -1;
}

namespace {

// A Unix socket path left by a dead process refuses connections: replace it.
// A live one is in use: keep it and let bind() fail.
void remove_stale_unix_socket(const socket_address& address) {
    std::string path = address.path();
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return;
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) return;
    int r = ::connect(probe, address.native(), address.length());
    int err = errno;
    ::close(probe);
    if (r != 0 && err == ECONNREFUSED) ::unlink(path.c_str());
}

}  // namespace

listener listen(const socket_address& address, const listen_options& options) {
    if (options.accept_queue == 0)
        throw config_error("listen_options::accept_queue must be at least 1");
    if (address.is_unix()) remove_stale_unix_socket(address);
    int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw io_error(errno, "socket for listening on " + address.to_string());
    auto s = std::make_shared<listener::state>();
    s->fd = fd;
    s->options = options;
    s->multishot = options.multishot;
    try {
        if (!address.is_unix()) {
            set_option(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
            if (options.reuse_port) set_option(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
        }
        if (::bind(fd, address.native(), address.length()) != 0) {
            throw io_error(errno, "bind " + address.to_string());
        }
        if (::listen(fd, options.backlog) != 0)
            throw io_error(errno, "listen on " + address.to_string());
        s->address = address.is_unix() ? address : query_address(fd, false);
    } catch (...) {
        ::close(fd);
        s->fd = -1;
        throw;
    }
    listener l(std::move(s));
    return l;
}

}  // namespace percore

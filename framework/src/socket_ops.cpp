#include "socket_ops.hpp"

#include <sys/socket.h>

#include <cerrno>

#include "percore/errors.hpp"
#include "percore/reactor.hpp"

namespace percore::detail {

bool would_block(int error) {
    return error == EAGAIN || error == EWOULDBLOCK || error == EINTR;
}

bool shard_stopping() {
    auto* r = reactor::local_or_null();
    return r && r->stop_requested();
}

[[noreturn]] void throw_failure(int error, const std::string& what) {
    if (error == ECANCELED && shard_stopping()) {
        throw shutdown_error("shard " + std::to_string(this_shard_id()) + " is stopping: " + what +
                             " cancelled");
    }
    if (error == ETIME) throw timeout_error(what + ": deadline passed");
    throw io_error(error, what);
}

void set_option(int fd, int level, int name, int value, const char* what) {
    if (::setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
        throw io_error(errno, std::string("setsockopt ") + what);
    }
}

socket_address query_address(int fd, bool peer) {
    sockaddr_storage storage{};
    socklen_t length = sizeof(storage);
    auto* address = reinterpret_cast<sockaddr*>(&storage);
    int r = peer ? ::getpeername(fd, address, &length) : ::getsockname(fd, address, &length);
    if (r != 0) throw io_error(errno, peer ? "getpeername" : "getsockname");
    return socket_address(address, length);
}

std::string describe_peer(int fd) {
    try {
        return query_address(fd, true).to_string();
    } catch (const io_error&) {
        return "fd " + std::to_string(fd);  // the peer is gone already
    }
}

}  // namespace percore::detail

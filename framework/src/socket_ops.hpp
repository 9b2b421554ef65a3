// What connection.cpp and listener.cpp share: socket options, addresses, and
// turning a failed operation into the right exception.
#pragma once

#include <string>

#include "percore/socket_address.hpp"

namespace percore::detail {

// EAGAIN, EWOULDBLOCK or EINTR: try again later, not a failure.
bool would_block(int error);
// This thread's shard is stopping: a cancelled operation is shutdown_error.
bool shard_stopping();
// Turns a failed operation into the right exception: the shard stopping,
// a deadline, or an io_error with the context.
[[noreturn]] void throw_failure(int error, const std::string& what);
// setsockopt of an int option; io_error naming `what` on failure.
void set_option(int fd, int level, int name, int value, const char* what);
// The socket's peer (peer = true) or local address.
socket_address query_address(int fd, bool peer);
// The peer's address for error messages, or "fd N" once the peer is gone.
std::string describe_peer(int fd);

}  // namespace percore::detail

// Rate limits of the kv log lines that clients trigger at will (idle
// timeouts, over-long input, unread replies, connections closed after a
// protocol or request error): at most 10 lines of a kind per shard every
// 5 s, then one summary line with the count (percore::rate_limited_log).
// A hostile client must not be able to make the server log without bound.
#pragma once

#include "percore/log.hpp"

namespace percore::kv::client_log {

// Connections closed by --idle-timeout.
inline rate_limited_log& idle_timeouts() {
    static thread_local rate_limited_log limit("kv: idle timeout lines");
    return limit;
}
// Connections closed for what they sent or left unread (query buffer,
// --max-output-buffer, a protocol error).
inline rate_limited_log& closed_connections() {
    static thread_local rate_limited_log limit("kv: closed connection lines");
    return limit;
}
// A request that failed inside the server (its client gets an error reply).
inline rate_limited_log& failed_requests() {
    static thread_local rate_limited_log limit("kv: failed request lines");
    return limit;
}

}  // namespace percore::kv::client_log

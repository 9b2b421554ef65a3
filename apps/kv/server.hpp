// Connection handling of the kv app, shared by its front ends: a listener per
// shard (SO_REUSEPORT), one fiber per connection, --max-connections
// admission, bounded input buffering, and the read -> process -> write loop
// around a protocol session. A front end plugs in a protocol_session factory.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

#include "client_log.hpp"  // server.cpp's rate-limited client lines
#include "db.hpp"
#include "forward.hpp"  // process_result
#include "percore/net.hpp"
#include "percore/sharded.hpp"
#include "percore/sync.hpp"

namespace percore::kv {

// One connection's protocol state (memcached text, RESP2...).
class protocol_session {
  public:
    virtual ~protocol_session() = default;
    // Handles the complete requests at the front of `input` and appends the
    // replies to `out` (see memcache::session::process for the contract).
    virtual process_result process(std::string_view input, std::string& out) = 0;
    // The largest input one request may need buffered (bounds the buffer).
    virtual std::size_t max_request_size() const = 0;
    // The line sent to a connection refused past --max-connections.
    virtual std::string_view too_many_connections_reply() const = 0;
};

// Makes the session of a new connection (called on the connection's shard).
using session_factory = std::function<std::unique_ptr<protocol_session>(db&)>;

// The memcached text protocol as a protocol_session.
session_factory memcache_sessions(std::size_t max_item_size);

// A TCP front end on every shard: start it with
//   sharded<tcp_server> s; s.start(std::ref(database), factory, "memcache");
//   port = listen_all(s, address);
class tcp_server : public service<tcp_server> {
  public:
    tcp_server(db& database, session_factory factory, std::string name);

    // Listens on `address` on this shard (SO_REUSEPORT) and starts the accept
    // fiber. Returns the bound port (the real one for port 0).
    std::uint16_t listen(const socket_address& address);
    // Closes the listener and every connection, and waits for their fibers.
    void stop();

    const std::string& name() const noexcept { return name_; }

  private:
    void accept_loop();
    void serve(connection& conn);

    db& db_;
    session_factory factory_;
    std::string name_;
    listener listener_;
    gate gate_;
    std::unordered_set<connection*> open_;
};

// The deadline of a connection's next read under --idle-timeout (nullopt when
// it is 0): `timeout` after `partial_since`, when the incomplete request at the
// front of its input began (so a byte a second does not keep it alive), else
// `timeout` from now.
std::optional<time_point> idle_deadline(std::chrono::seconds timeout,
                                        std::optional<time_point> partial_since);

// Writes all of data, throwing timeout_error when the peer accepts nothing for
// `timeout` (--idle-timeout; 0: wait forever). Progress renews the deadline, so
// a slow but reading client gets a large reply.
void write_with_timeout(connection& conn, std::string_view data, std::chrono::seconds timeout);

// Refuses a connection past --max-connections so that the client reads
// `reply` even if it already sent requests: writes it, shuts down our side
// (FIN), then reads and discards the client's input until its EOF, up to 1 MiB
// or 2 s, and closes. Closing with unread input would send a reset, which can
// reach the client before it reads the reply. At most 256 connections linger
// per shard; beyond that a refused connection is closed after the reply.
// Suspends (up to about 3 s); stop() ends it early by shutting the socket.
void refuse_connection(connection& conn, std::string_view reply, std::string_view who);

// Listens on every shard (the first shard picks the port when it is 0) and
// returns the port.
std::uint16_t listen_all(sharded<tcp_server>& servers, const socket_address& address);

}  // namespace percore::kv

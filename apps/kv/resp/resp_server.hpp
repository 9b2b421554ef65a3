// The kv app's Redis front end: RESP2 on --redis-port, one listener per shard
// (SO_REUSEPORT), one fiber per connection. A connection parses every
// request its input holds, sends each key's command to the key's owner shard
// in one batch per owner (submit_to), and writes the replies in request
// order. Commands that span the keyspace (DBSIZE, KEYS, SCAN, FLUSHDB,
// MSETNX, INFO) first wait for the batch before them, so a pipeline keeps
// Redis's ordering.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "db.hpp"
#include "percore/future.hpp"
#include "percore/net.hpp"
#include "percore/sync.hpp"
#include "resp/resp_commands.hpp"
#include "resp/resp_parser.hpp"
#include "store/store.hpp"

namespace percore::kv {

class resp_frontend;
class resp_session;

// Options of the Redis front end (the kv app's command line).
struct resp_config {
    std::string host = "127.0.0.1";  // kv's --address (loopback unless told otherwise)
    std::uint16_t port = 6379;       // --redis-port (0: any free port, see resp_frontend::port)
    std::string requirepass;         // --requirepass: empty = no AUTH needed
    std::size_t proto_max_bulk_len = 512 * 1024 * 1024;            // --proto-max-bulk-len
    std::size_t client_query_buffer_limit = std::size_t{1} << 30;  // --client-query-buffer-limit
};

// What every shard's front end shares: built once before the shards start
// serving, read-only afterwards except the atomics.
struct resp_shared {
    resp_shared(resp_config config, db& database);

    resp_config config;
    resp_settings settings;
    db* database;  // stores, connection admission and counters
    std::vector<store*>
        stores;  // by shard id (filled by start_resp_frontends); each used only on its own shard
    std::vector<resp_frontend*> frontends;  // by shard id; filled by each shard's start()
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    std::atomic<std::uint64_t> next_client_id{1};
    std::atomic<bool> msetnx_token{false};  // one cross-shard MSETNX at a time
};

// Counters of one shard's front end (summed by INFO).
struct resp_stats {
    std::uint64_t connections_received = 0;
    std::uint64_t commands_processed = 0;
    std::uint64_t rejected_connections = 0;
    std::uint64_t protocol_errors = 0;
    std::uint64_t clients_moved = 0;  // handed to the shard owning their keys
};

// The front end on one shard. Build, start() and stop() it on its shard.
class resp_frontend {
  public:
    explicit resp_frontend(resp_shared& shared);
    ~resp_frontend();
    resp_frontend(const resp_frontend&) = delete;
    resp_frontend& operator=(const resp_frontend&) = delete;

    // Listens on config.port (or `port` when non-zero: other shards join the
    // port shard 0 picked for port 0) and serves connections in fibers.
    void start(std::uint16_t port = 0);
    // Stops accepting, closes every connection and waits for their fibers.
    void stop();
    // The port listened on.
    std::uint16_t port() const noexcept { return port_; }

    resp_stats& stats() noexcept { return stats_; }
    resp_shared& shared() noexcept { return shared_; }

    // Takes over a client moved here from another shard (resp_session::run):
    // its socket and its session. Closes the socket if this front end stops.
    void adopt(percore::connection conn, std::unique_ptr<resp_session> session);

  private:
    void accept_loop();
    // Serves a connection: a new one (no session yet) or one moved here.
    void serve(percore::connection conn, std::unique_ptr<resp_session> session);
    // Hands a connection and its session to shard `to` (see adopt()).
    void move_to(unsigned to, percore::connection& conn, std::unique_ptr<resp_session> session);

    resp_shared& shared_;
    listener listener_;
    std::uint16_t port_ = 0;
    gate gate_;
    future<void> acceptor_;
    std::vector<percore::connection*> live_;  // open connections, closed by stop()
    resp_stats stats_;
};

// Starts a front end on every shard (shard 0 first, so that port 0 means one
// port for all) and returns them by shard id. Call from a fiber of a running
// app; stop_resp_frontends() stops them.
std::vector<std::unique_ptr<resp_frontend>> start_resp_frontends(resp_shared& shared);
void stop_resp_frontends(std::vector<std::unique_ptr<resp_frontend>>& frontends);

}  // namespace percore::kv

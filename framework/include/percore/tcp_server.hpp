// tcp_server: one shard's part of a TCP service. Each shard makes one and
// listens on the same address (SO_REUSEPORT: the kernel spreads the
// connections); each accepted connection runs the app's handler in a fiber
// of its own. Around the handler it does what every server needs:
//
// - a connection cap: at most options.max_connections open on this shard
//   (give each shard max/shard_count() for a cap over the process, as
//   echo and skeleton do); past it a new connection gets options.refusal
//   and is closed, and the open ones are not disturbed;
// - back-off when accept fails for lack of resources (EMFILE, ENFILE,
//   ENOBUFS, ENOMEM): it waits 10 ms, doubling up to 1 s while the failures
//   last, instead of spinning a CPU, and keeps serving the open connections;
// - a registry of the live connections (count, for_each) for stats, and for
//   stop();
// - a graceful stop: stop() stops accepting, shuts the connections' reads
//   down so that handlers blocked in a read see EOF, waits up to
//   options.stop_timeout for the handlers to return, then shuts the rest
//   down and interrupts their fibers (the suspension they wait in throws
//   shutdown_error, as at a shard's stop) and waits for them to unwind.
//
// Handler contract: `void(connection&)`, run in the connection's fiber; when
// it returns the connection is closed. An exception it throws ends that
// connection only (logged at debug level: resets and broken pipes are a
// normal end). Build, listen and stop a tcp_server on its own shard.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <unordered_map>

#include "percore/net.hpp"
#include "percore/sync.hpp"

namespace percore {

namespace detail {
class fiber_base;
}

// Settings of one shard's tcp_server.
struct tcp_server_options {
    std::string name = "tcp";                      // in fiber names and log lines
    std::size_t max_connections = 10000;           // open on this shard at once
    std::string refusal;                           // sent to a connection refused past it
    std::chrono::milliseconds stop_timeout{5000};  // stop(): handlers' time to finish
    listen_options listen;
};

class tcp_server {
  public:
    using handler = std::function<void(connection&)>;

    tcp_server(handler serve, tcp_server_options options = {});
    ~tcp_server();
    tcp_server(const tcp_server&) = delete;
    tcp_server& operator=(const tcp_server&) = delete;

    // Listens on `address` on this shard and starts accepting. Throws
    // io_error (address in use...). Returns the bound address (the real
    // port for port 0).
    socket_address listen(const socket_address& address);
    // Stops accepting and ends the connections (see the top). Suspends;
    // call once, from a fiber on this shard.
    void stop();

    // Connections open on this shard now.
    std::size_t connections() const noexcept { return live_.size(); }
    // Calls fn(connection&) for each open connection (fn must not suspend).
    template <typename F>
    void for_each_connection(F&& fn) const {
        for (const auto& [conn, fiber] : live_) fn(*conn);
    }
    // Connections refused past the cap, and accept failures backed off from.
    std::uint64_t refused() const noexcept { return refused_; }
    std::uint64_t accept_failures() const noexcept { return accept_failures_; }

  private:
    void accept_loop();
    void run_connection(connection conn);
    void refuse(connection conn);

    handler serve_;
    tcp_server_options options_;
    listener listener_;
    gate fibers_;
    // Open connections and the fibers serving them (stop() may interrupt them).
    std::unordered_map<connection*, detail::fiber_base*> live_;
    std::uint64_t refused_ = 0;
    std::uint64_t accept_failures_ = 0;
    bool stopping_ = false;
    mutex drained_lock_;
    condition_variable drained_;  // stop() waits on it for live_ to empty
};

}  // namespace percore

// Starting and stopping a set of shards: one reactor thread per shard, pinned
// to its CPU, shard 0 on the calling thread. The app shell builds on this;
// tests use it directly to run code inside real reactors.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "percore/reactor.hpp"

namespace percore {

struct runtime_config {
    unsigned smp = 1;
    std::vector<unsigned> cpus;  // the CPU of each shard; empty: no pinning
    reactor_config reactor;
    bool handle_signals = false;  // SIGINT/SIGTERM request a graceful stop
};

// Starts config.smp shards, runs `main` in a fiber on shard 0, stops every
// shard once it returns, and returns its value. An exception thrown by main
// is rethrown here after all shards stopped; config_error if a shard cannot
// start (its ring, say).
int run_shards(const runtime_config& config, std::function<int()> main);

// Asks the app to stop (what SIGINT/SIGTERM do): wakes wait_for_stop().
// Safe from any shard.
void request_app_stop() noexcept;
// True once a stop was requested.
bool app_stop_requested() noexcept;
// Suspends the calling fiber (on shard 0) until a stop is requested; what a
// server's main fiber waits on after starting its services.
void wait_for_stop();

}  // namespace percore

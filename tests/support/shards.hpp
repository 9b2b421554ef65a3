// Runs a test body inside real reactors: a fiber on shard 0 of `smp` fresh
// shards (unpinned). Catch2 assertions are safe there (shard 0 is the test's
// own thread); other shards should hand results back to shard 0 to check.
#pragma once

#include <functional>

#include "percore/runtime.hpp"

namespace percore::testing {

inline int run_in_shards(unsigned smp, std::function<void()> body,
                         reactor_config reactor = reactor_config{}) {
    runtime_config config;
    config.smp = smp;
    config.reactor = reactor;
    return run_shards(config, [&] {
        body();
        return 0;
    });
}

inline int run_in_reactor(std::function<void()> body) {
    return run_in_shards(1, std::move(body));
}

}  // namespace percore::testing

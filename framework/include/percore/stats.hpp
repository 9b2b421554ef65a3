// Per-shard counters: plain integers owned by the shard's reactor, readable
// from code on that shard (reactor::local().stats()) and printed by --stats.
#pragma once

#include <cstdint>

namespace percore {

struct shard_stats {
    std::uint64_t loop_turns = 0;       // reactor loop iterations
    std::uint64_t fibers_spawned = 0;
    std::uint64_t tasks_run = 0;        // times a fiber was resumed
    std::uint64_t io_submitted = 0;     // SQEs handed to the kernel
    std::uint64_t io_completed = 0;     // CQEs reaped
    std::uint64_t io_enter_calls = 0;   // io_uring_enter system calls
    std::uint64_t sleeps = 0;           // times the reactor waited in the ring
    std::uint64_t wakeups_received = 0; // eventfd wake-ups from other shards
    std::uint64_t timers_fired = 0;
    std::uint64_t busy_ns = 0;          // time not spent waiting in the ring
    std::uint64_t idle_ns = 0;          // time spent waiting in the ring
};

}  // namespace percore

// Per-shard counters: plain integers owned by the shard's reactor, readable
// from code on that shard (reactor::local().stats()) and printed by --stats.
// A new field also gets a line in metrics.cpp's shard_metrics (Prometheus).
#pragma once

#include <cstdint>

namespace percore {

struct shard_stats {
    std::uint64_t loop_turns = 0;  // reactor loop iterations
    std::uint64_t fibers_spawned = 0;
    std::uint64_t tasks_run = 0;         // times a fiber was resumed
    std::uint64_t io_submitted = 0;      // SQEs handed to the kernel
    std::uint64_t io_completed = 0;      // CQEs reaped
    std::uint64_t io_enter_calls = 0;    // io_uring_enter system calls
    std::uint64_t sleeps = 0;            // times the reactor waited in the ring
    std::uint64_t wakeups_received = 0;  // eventfd wake-ups from other shards
    std::uint64_t timers_fired = 0;
    std::uint64_t busy_ns = 0;  // time not spent waiting in the ring
    std::uint64_t idle_ns = 0;  // time spent waiting in the ring
    std::uint64_t stalls = 0;   // fibers that ran past --stall-threshold-ms
    // Cross-shard traffic (smp.hpp, channel.hpp): messages this shard put on
    // a ring to another shard, messages it took off, and sends that had to
    // wait because the ring toward the peer was full.
    std::uint64_t smp_messages_sent = 0;
    std::uint64_t smp_messages_received = 0;
    std::uint64_t smp_ring_full_waits = 0;
    // Files (dma_file, streams, buffered_file): operations submitted and bytes moved.
    std::uint64_t file_reads = 0;
    std::uint64_t file_writes = 0;
    std::uint64_t file_bytes_read = 0;
    std::uint64_t file_bytes_written = 0;
    std::uint64_t file_fsyncs = 0;  // fsync and fdatasync
};

}  // namespace percore

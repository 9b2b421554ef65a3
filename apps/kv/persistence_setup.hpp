// Start-up of kv persistence over all shards: the data directory's layout
// (one shard-N directory per shard), re-distributing the keys when it was
// written with a different --smp, and the process-wide commands (BGREWRITEAOF,
// durability barriers for cross-shard commands).
#pragma once

#include <cstddef>

#include "db.hpp"

namespace percore::kv {

// Opens (replaying) every shard's log, all shards in parallel, before the
// front ends start; a no-op without --data-dir. A directory written by a
// different shard count is re-sharded first: every shard reads all old logs
// and keeps its keys, writes them as its new log, and the new layout
// replaces the old one at one commit point (a crash before it keeps the old
// layout, after it the start-up completes the switch). config_error with the
// path for unusable directories or corrupt logs (see --repair-log).
void open_persistence(db& database, const persistence_config& config);

// Starts a log compaction on every shard (BGREWRITEAOF); returns how many
// shards started one (the others had one running, or no log).
std::size_t start_log_rewrites(db& database);

// Every shard's log counters summed (flags: any shard); zeros without logs.
log_stats collect_log_stats(db& database);

// With --fsync always: waits until every shard's changes so far are durable
// (for replies of commands that ran on several shards, e.g. FLUSHALL). A
// no-op without persistence.
void sync_all_shards(db& database);

}  // namespace percore::kv

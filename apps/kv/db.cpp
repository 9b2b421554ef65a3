#include "db.hpp"

#include <algorithm>

#include "percore/log.hpp"

namespace percore::kv {

namespace {

std::atomic<std::size_t> open_connections{0};
std::atomic<bool> log_close_failed{false};  // some shard's log did not close cleanly
const time_point process_start = clock::now();
const std::int64_t process_start_unix = unix_now();

store_config shard_store_config(const db_config& config) {
    store_config c;
    c.max_memory = std::max<std::size_t>(config.max_memory / std::max(1u, shard_count()), 1);
    c.evict = config.evict;
    return c;
}

}  // namespace

db_shard::db_shard(const db_config& config) : config_(config), store_(shard_store_config(config)) {}

void db_shard::start() {
    store_.start_active_expiry();
    const bool durable_replies =
        !config_.persistence.data_dir.empty() && config_.persistence.fsync == fsync_mode::always;
    if (!config_.shared_reads || durable_replies || shard_count() == 1) return;
    store_.enable_shared_reads(shard_count());
    // Every instance exists by now (sharded<T>::start): ask each for its store.
    peers_.assign(shard_count(), nullptr);
    for (unsigned s = 0; s < shard_count(); ++s) {
        peers_[s] = container().invoke_on(s, [](db_shard& d) { return &d.store(); }).get();
    }
}

void db_shard::stop() {
    store_.stop_active_expiry();
    if (log_ && !log_->close()) log_close_failed.store(true, std::memory_order_relaxed);
}

bool db_shard::logs_closed_cleanly() noexcept {
    return !log_close_failed.load(std::memory_order_relaxed);
}

void db_shard::sync_log() {
    if (log_->needs_sync()) log_->sync();
    log_->wait_for_room();  // --log-buffer-limit: writers wait for a slow disk
}

bool db_shard::admit_connection() noexcept {
    const std::size_t before = open_connections.fetch_add(1, std::memory_order_relaxed);
    if (before >= config_.max_connections) {
        open_connections.fetch_sub(1, std::memory_order_relaxed);
        ++connections_.rejected_connections;
        return false;
    }
    ++connections_.curr_connections;
    ++connections_.total_connections;
    return true;
}

void db_shard::release_connection() noexcept {
    open_connections.fetch_sub(1, std::memory_order_relaxed);
    --connections_.curr_connections;
}

time_point db_shard::started_at() noexcept {
    return process_start;
}
std::int64_t db_shard::started_unix() noexcept {
    return process_start_unix;
}

db_stats collect_stats(db& database) {
    return database.map_reduce(
        [](db_shard& shard) {
            db_stats s;
            s.store = shard.store().stats();
            s.connections = shard.connections();
            s.memory_used = shard.store().memory_used();
            s.items_per_shard.push_back(shard.store().size());
            return s;
        },
        db_stats{},
        [](db_stats acc, const db_stats& s) {
            acc.store += s.store;
            acc.connections += s.connections;
            acc.memory_used += s.memory_used;
            acc.items_per_shard.insert(acc.items_per_shard.end(), s.items_per_shard.begin(),
                                       s.items_per_shard.end());
            return acc;
        });
}

bool all_shards_accepting_writes(db& database) {
    // Counted as unsigned: map_reduce keeps a vector of the results (no vector<bool>).
    const unsigned refusing = database.map_reduce(
        [](db_shard& shard) { return shard.store().accepting_writes() ? 0u : 1u; }, 0u,
        [](unsigned a, unsigned b) { return a + b; });
    return refusing == 0;
}

bool flush_all(db& database, time_point when) {
    ++database.local().connections().flush_commands;
    // Refused like every write that cannot be logged now (else, with --fsync
    // always, the OK would wait for the disk to have room again).
    if (!all_shards_accepting_writes(database)) return false;
    database.invoke_on_all([when](db_shard& shard) {
        shard.store().flush_at(when);
        shard.sync();  // --fsync always: the OK means the flush is durable
    });
    return true;
}

}  // namespace percore::kv

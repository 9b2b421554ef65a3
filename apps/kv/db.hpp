// The kv database: one db_shard per shard (a percore::sharded service), each
// holding the store of the keys that shard owns plus its connection
// counters. Front ends reach a key's store on its owner shard through the
// forwarder (forward.hpp); global commands (flush, stats) go to every shard.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "log/persistence.hpp"
#include "percore/sharded.hpp"
#include "store/store.hpp"

namespace percore::kv {

// Process-wide settings of the kv app (from its options).
struct db_config {
    std::size_t max_memory = std::size_t{1} << 30;  // total over all shards
    bool evict = true;                              // false: --no-evict
    // GETs read another shard's store directly (store/store.hpp, "Shared reads")
    // instead of a cross-shard call; false: --no-shared-reads. Off under
    // --fsync always, where a reply may show only what is durable.
    bool shared_reads = true;
    std::size_t max_connections = 10000;      // over all shards and protocols
    std::size_t max_item_size = 1024 * 1024;  // memcached value limit (-I)
    // --idle-timeout: a connection silent this long, stuck this long in one
    // request (slowloris) or not reading its replies this long is closed (0: never).
    std::chrono::seconds idle_timeout{300};
    // --max-output-buffer: reply bytes one connection may have pending before
    // it is disconnected (one reply alone always fits: it is bounded by the value size).
    std::size_t max_output_buffer = std::size_t{64} << 20;
    persistence_config persistence;  // --data-dir, --fsync... (off by default)
};

// Connection counters of one shard (summed for stats / INFO).
struct connection_stats {
    std::uint64_t curr_connections = 0;
    std::uint64_t total_connections = 0;
    std::uint64_t rejected_connections = 0;          // refused past --max-connections
    std::uint64_t flush_commands = 0;                // flush_all / FLUSHALL received on this shard
    std::uint64_t output_buffer_disconnections = 0;  // clients closed past --max-output-buffer

    connection_stats& operator+=(const connection_stats& o) noexcept {
        curr_connections += o.curr_connections;
        total_connections += o.total_connections;
        rejected_connections += o.rejected_connections;
        flush_commands += o.flush_commands;
        output_buffer_disconnections += o.output_buffer_disconnections;
        return *this;
    }
};

// Everything both protocols' stats need, summed over shards.
struct db_stats {
    store_stats store;
    connection_stats connections;
    std::size_t memory_used = 0;
    std::vector<std::uint64_t> items_per_shard;  // curr_items of each shard, by shard
};

class db_shard : public service<db_shard> {
  public:
    // config.max_memory is the total: each shard gets an equal part.
    explicit db_shard(const db_config& config);

    // This shard's part of the data.
    kv::store& store() noexcept { return store_; }
    // Shard `shard`'s store, for store::read_shared() only (the one use of a
    // peer's instance from this thread; see store/store.hpp, "Shared reads"):
    // nullptr unless shared reads are on.
    const kv::store* peer_store(unsigned shard) const noexcept {
        return shard < peers_.size() ? peers_[shard] : nullptr;
    }
    const db_config& config() const noexcept { return config_; }
    connection_stats& connections() noexcept { return connections_; }

    // sharded<T> hooks: arm / disarm active expiry on this shard; stop()
    // also flushes and closes the log.
    void start();
    void stop();
    // False once some shard's log failed to write, sync or close everything
    // it acknowledged (it said why): the app then exits non-zero.
    static bool logs_closed_cleanly() noexcept;

    // This shard's log (nullptr without --data-dir; open_persistence() makes it).
    shard_log* log() noexcept { return log_.get(); }
    void set_log(std::unique_ptr<shard_log> log) noexcept { log_ = std::move(log); }
    // With --fsync always: suspends until this shard's changes so far are
    // durable; in every mode, waits while the log's unwritten records pass
    // --log-buffer-limit (back-pressure). Front ends call it on the owner
    // shard after running a batch and before replying; a null test without
    // --data-dir.
    void sync() {
        if (log_) sync_log();
    }

    // Admission against --max-connections over the whole process: true if
    // the new connection may stay (then call release_connection() when it
    // ends). The one cross-shard datum: a relaxed atomic counter.
    bool admit_connection() noexcept;
    void release_connection() noexcept;
    // A client moved from one shard to another (kv moves a client to the
    // shard its keys live on): still admitted, counted on its new shard.
    void connection_moved_out() noexcept { --connections_.curr_connections; }
    void connection_moved_in() noexcept { ++connections_.curr_connections; }

    // When the app started (steady clock and unix seconds), for uptime.
    static time_point started_at() noexcept;
    static std::int64_t started_unix() noexcept;

  private:
    void sync_log();

    db_config config_;
    kv::store store_;
    std::vector<const kv::store*> peers_;  // by shard, with shared reads
    std::unique_ptr<shard_log> log_;
    connection_stats connections_;
};

using db = sharded<db_shard>;

// Sums every shard's counters (suspends: one call per shard).
db_stats collect_stats(db& database);

// Removes every item on every shard now, or when `when` has passed; counts
// one flush command on the calling shard.
// False, removing nothing, when a shard's log cannot take writes (its disk is
// full): checked on every shard first.
bool flush_all(db& database, time_point when);

// Whether every shard's log takes writes now (suspends: one call per shard).
bool all_shards_accepting_writes(db& database);

}  // namespace percore::kv

// kv durability (--data-dir): each shard appends every change of its store
// to its own log, DIR/shard-N/log (format: log_format.hpp), replays it at
// start and compacts it in the background. See docs/persistence.md for what
// each --fsync mode promises.
//
// The store reports changes through store_observer without suspending: the
// records go to an in-memory buffer, and one writer fiber per shard writes
// what accumulated in one direct write: group commit. With --fsync always a
// second fiber, the syncer, makes what was written durable with one
// fdatasync while the writer writes the next group, and a front end calls
// db_shard::sync() before sending replies, which suspends until its changes
// are durable.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "log/log_file.hpp"
#include "percore/clock.hpp"
#include "percore/errors.hpp"
#include "percore/future.hpp"
#include "percore/metrics.hpp"
#include "percore/sync.hpp"
#include "store/store.hpp"

namespace percore {
class task_queue;
}

namespace percore::kv {

namespace detail {
// Shared by the log's writer (persistence.cpp) and its compaction
// (persistence_compaction.cpp).
// A record's expiry: unix milliseconds, 0 for none.
std::int64_t expiry_millis(time_point expiry);
// Reserves `room` if the disk has it; ENOSPC leaves it to the later checks.
void reserve_if_room(log_appender& appender, std::uint64_t room);
}  // namespace detail

// When the log is made durable (Redis's appendfsync).
enum class fsync_mode : std::uint8_t { always, everysec, no };

// Parses "always" / "everysec" / "no" (config_error otherwise).
fsync_mode parse_fsync_mode(std::string_view text);
// The option's spelling of a mode.
std::string_view fsync_mode_name(fsync_mode mode) noexcept;

// The persistence options of the kv app.
struct persistence_config {
    std::string data_dir;  // empty: no persistence (a pure cache)
    fsync_mode fsync = fsync_mode::everysec;
    bool repair = false;          // --repair-log: cut a corrupt log instead of refusing to start
    double rewrite_factor = 2.0;  // compact when the log passes factor x live data
    std::uint64_t rewrite_min_size = 64 << 20;  // ... and at least this many bytes
    // --log-buffer-limit: records in memory, not yet written (the pending
    // batch, the one being written and a compaction's tail), past which
    // writers wait for the disk instead of queueing more (back-pressure).
    std::uint64_t buffer_limit = std::uint64_t{64} << 20;
    // Fault hooks for tests (off by default).
    struct faults {
        // The writer sleeps this long before each write, as a disk slower
        // than the clients would make it wait.
        std::chrono::milliseconds write_delay{0};
        // Every fdatasync of the log fails with this errno (0: none).
        int sync_error = 0;
    } test_faults;

    bool enabled() const noexcept { return !data_dir.empty(); }
};

// Applies one replayed record (not a header) to a store: keys already
// expired are removed, not stored. Returns false if a set did not fit
// (--max-memory). `steady_now` and `unix_now_ms` are one moment on both clocks.
bool replay_record(kv::store& store, const log_record& record, time_point steady_now,
                   std::int64_t unix_now_ms);
// The system clock now in unix milliseconds.
std::int64_t unix_now_millis() noexcept;

// Counters of one shard's log (INFO persistence).
struct log_stats {
    std::uint64_t log_bytes = 0;     // current log file's data
    std::uint64_t live_bytes = 0;    // what a rewrite would write now (live_log_bytes())
    std::uint64_t records = 0;       // appended since start
    std::uint64_t syncs = 0;         // fdatasyncs
    std::uint64_t rewrites = 0;      // compactions finished
    std::uint64_t replayed = 0;      // records replayed at start
    std::uint64_t buffered = 0;      // record bytes in memory not yet written (--log-buffer-limit)
    std::uint64_t buffer_waits = 0;  // times a writer waited for the buffer to drain
    bool disk_full = false;
    bool failed = false;  // a write or fdatasync failed: writes are refused until restart
    bool rewriting = false;
};

// One shard's log. Build, open(), use and close() on its shard.
class shard_log final : public store_observer {
  public:
    shard_log(const persistence_config& config, kv::store& store, unsigned shard,
              unsigned shard_count);
    ~shard_log() override;
    shard_log(const shard_log&) = delete;
    shard_log& operator=(const shard_log&) = delete;

    // The directory of this shard's files (DIR/shard-N).
    std::string directory() const;
    // Replays DIR/shard-N/log into the store (skipping expired keys; logs
    // records, bytes, seconds), opens it for appending and starts the writer.
    // config_error on corruption (see scan_log).
    void open();
    // Writes and syncs everything appended, stops the fibers, closes the
    // file. False (after an error line) if something appended may not be
    // durable: the log failed before, or the last write, sync or close did.
    bool close();

    // store_observer: each change becomes a record in the buffer.
    bool accepting() const noexcept override { return !disk_full_ && !failed_ && !closing_; }
    void on_set(const item_view& item) override;
    void on_remove(std::string_view key) override;
    void on_expire(std::string_view key, time_point expiry) override;
    void on_flush() override;

    // With --fsync always: suspends until every record appended so far is
    // durable. io_error if the log failed.
    void sync();
    bool always() const noexcept { return mode_ == fsync_mode::always; }
    // --log-buffer-limit: suspends while the records in memory not yet
    // written pass the limit (until the writer drains them, or the log
    // failed or closes). Front ends call it, through db_shard::sync(), after
    // their changes and before reading more requests: one batch per
    // connection may pass the limit, then its connection waits.
    void wait_for_room() {
        if (buffered_bytes() > config_.buffer_limit) wait_for_room_slow();
    }
    std::uint64_t buffered_bytes() const noexcept {
        return pending_.size() + writing_.size() + rewrite_tail_.size();
    }
    bool needs_sync() const noexcept { return mode_ == fsync_mode::always && durable_ < appended_; }
    // Starts a background compaction; false if one is running (or closing).
    bool start_rewrite();

    log_stats stats() const;
    // Bytes a snapshot of the live keys takes in the log now: compaction
    // starts when the log passes --log-rewrite-factor times this.
    std::uint64_t live_log_bytes() const noexcept;

  private:
    // Encodes one record into the buffer (and, while a compaction runs, into
    // its tail, sealed with the new log's generation).
    template <typename Encode>
    void log_change(Encode&& encode);
    void appended(std::size_t bytes);
    void writer_loop();
    void write_batch();
    void syncer_loop();
    void wait_for_syncer();
    void durable_moved();
    void sync_file();
    void wait_for_room_slow();
    void room_moved();
    io_error log_failed() const;
    void check_room();
    void extend_in_background(std::uint64_t room);
    std::uint64_t preallocation_room(std::uint64_t end) const noexcept;
    void maybe_rewrite();
    void rewrite();
    void finish_rewrite();
    void abort_rewrite(const std::exception& e);
    bool install_snapshot();
    void retire(log_appender old, bool kept_as_spare);
    log_appender open_snapshot_file();
    open_options snapshot_open_options() const noexcept;
    bool drop_spare();
    std::string snapshot_path() const;
    std::string spare_path() const;

    persistence_config config_;
    kv::store& store_;
    unsigned shard_;
    unsigned shard_count_;
    fsync_mode mode_;

    log_appender appender_;
    std::uint32_t generation_ = 0;  // the log's, sealing its records (log_format.hpp)
    bool buffered_ = false;         // the file system cannot do direct I/O (found at open)
    std::string pending_;           // records not yet handed to the writer
    std::string writing_;           // the batch being written
    std::uint64_t appended_ = 0;    // records' bytes appended since open (a sequence number)
    std::uint64_t durable_ = 0;     // ... of which durable (always) / written (other modes)
    std::uint64_t written_ = 0;     // always: ... of which written, for the syncer to sync
    bool syncing_ = false;          // the syncer is in an fdatasync
    bool stop_syncer_ = false;
    bool synced_ = true;  // everything written was fdatasync'ed
    time_point last_sync_{};
    bool disk_full_ = false;
    bool failed_ = false;
    bool closing_ = false;
    bool writer_idle_ = false;
    bool store_observer_attached_ = false;

    mutex writer_mutex_;
    condition_variable writer_cv_;  // work for the writer
    // Fibers in sync(), in arrival order. Their targets never decrease
    // (appended_ only grows), so a commit wakes a prefix of them, not all
    // (notify_all woke each 3.3 times per wait at pipeline 16).
    struct sync_waiter {
        std::uint64_t target;
        promise<void> done;
    };
    std::deque<sync_waiter> sync_waiters_;
    mutex sync_mutex_;
    condition_variable durable_cv_;  // durable_ moved (or the log failed): wait_for_syncer
    mutex room_mutex_;
    condition_variable room_cv_;  // buffered bytes went down (or the log failed, or closes)
    std::uint64_t buffer_waits_ = 0;
    future<void> writer_;
    // --fsync always: syncs what the writer wrote while it writes the next
    // batch, so a batch's write overlaps the previous batch's fdatasync.
    future<void> syncer_;
    mutex syncer_mutex_;
    condition_variable syncer_cv_;  // work for the syncer
    // The fiber extending the log ahead of the writer (check_room).
    future<void> extender_;
    time_point extend_retry_at_{};  // after a failed extension, not before this

    // Compaction.
    task_queue* compaction_queue_ = nullptr;
    bool rewriting_ = false;
    bool rewrite_ready_ = false;            // the snapshot is written: the writer switches
    std::uint32_t rewrite_generation_ = 0;  // the snapshot's
    // DIR/shard-N/log.spare, the log the last compaction replaced, is kept for
    // the next snapshot to overwrite: no zeros to write (measured: +12 %
    // durable SETs at pipeline 16 with compactions every second or two).
    bool spare_ = false;
    std::string rewrite_tail_;  // records appended since the rewrite began
    std::unique_ptr<log_appender> rewrite_appender_;
    future<void> rewriter_;
    future<void> retired_;  // closes the log a rewrite replaced
    std::uint64_t rewrites_ = 0;
    std::uint64_t records_ = 0;
    std::uint64_t syncs_ = 0;
    std::uint64_t replayed_ = 0;
    // In the metrics and the --stats table (last: destroyed first, while
    // what they read is still there; their last values stay for --stats).
    std::vector<std::unique_ptr<shard_gauge>> gauges_;
};

}  // namespace percore::kv

// kv durability, the compaction side of shard_log (persistence.hpp): when
// the log outgrows its live data, a background fiber writes a snapshot of
// the live keys to a new file, the writer appends what changed meanwhile and
// switches to it (write, fdatasync, rename, fsync the directory), and the
// replaced log is freed a few MiB at a time.
#include <algorithm>
#include <chrono>
#include <filesystem>

#include "log/persistence.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/scheduling.hpp"
#include "percore/timer.hpp"

namespace percore::kv {

using detail::expiry_millis;
using detail::reserve_if_room;

namespace {

using namespace std::chrono_literals;

// A replaced log is freed in steps this big, this far apart (shard_log::retire).
constexpr std::uint64_t retire_step = 4 << 20;
// A replaced log up to this size is kept as the next snapshot's file; a
// bigger one is freed (a spare costs its size on disk until then).
constexpr std::uint64_t max_spare = 256 << 20;
constexpr auto retire_pause = 10ms;
constexpr std::size_t rewrite_chunk = 128 << 10;  // small writes, as log_appender's zeros
constexpr std::uint64_t rewrite_sync_every = 4 << 20;

}  // namespace

// --- compaction --------------------------------------------------------------------------

// Closes the replaced log, kept as the spare, or else frees it beside the
// writer, a few MiB at a time: freeing a 77 MB log in one go (its last
// close) took 66-73 ms, and every group commit waited for it (measured at
// pipeline 16). The rename that unlinked it was journaled before these
// truncations, so a crash never finds it cut but named.
void shard_log::retire(log_appender old, bool kept_as_spare) {
    if (kept_as_spare) {
        spare_ = true;
        old.file().close();  // no truncation: a snapshot overwrites it
        return;
    }
    if (retired_.valid()) retired_.get();  // the one before, long done
    retired_ =
        spawn(spawn_options{.name = "kv-log-retire"}, [this, old = std::move(old)]() mutable {
            try {
                for (std::uint64_t size = old.file().size(); size > 0 && !closing_;) {
                    size -= std::min(size, retire_step);
                    old.file().truncate(size);
                    sleep_for(retire_pause);
                }
                old.close();
            } catch (const io_error& e) {
                logger().warn("shard {}: freeing the old log: {}", shard_, e.what());
            }
        });
}

std::uint64_t shard_log::live_log_bytes() const noexcept {
    // Exactly what rewrite() would write now: a header, then one set record
    // per item. Items expired but not yet removed are counted (until active
    // expiry or a lookup drops them), so it may overstate by those.
    return header_record_size + store_.size() * set_record_overhead + store_.payload_bytes();
}

// Compares the log with what its live data takes in a log (not with the
// items' memory, which counts the table, the allocator and per-item headers).
void shard_log::maybe_rewrite() {
    const std::uint64_t size = appender_.end();
    if (rewriting_ || size < config_.rewrite_min_size) return;
    const double live = static_cast<double>(live_log_bytes());
    if (static_cast<double>(size) > config_.rewrite_factor * live) start_rewrite();
}

bool shard_log::start_rewrite() {
    if (rewriting_ || closing_ || failed_ || disk_full_ || !appender_.is_open()) return false;
    rewriting_ = true;
    rewrite_generation_ = next_generation(generation_);
    rewrite_tail_.clear();
    rewriter_ = spawn_into(*compaction_queue_, spawn_options{.name = "kv-log-rewrite"},
                           [this] { rewrite(); });
    return true;
}

// Frees the spare's blocks (a full disk needs them); false if there is none.
bool shard_log::drop_spare() {
    if (!spare_) return false;
    spare_ = false;
    try {
        remove_file(spare_path());
    } catch (const io_error& e) {
        logger().warn("shard {}: removing the spare log: {}", shard_, e.what());
    }
    return true;
}

// The snapshot's file: the spare renamed, its old records left to be
// overwritten (reused), or a new file.
log_appender shard_log::open_snapshot_file() {
    if (spare_) {
        spare_ = false;
        try {
            rename_file(spare_path(), snapshot_path());
            return log_appender(dma_file::open(snapshot_path(), snapshot_open_options()), 0,
                                /*reused=*/true);
        } catch (const io_error& e) {
            logger().warn("shard {}: reusing the spare log: {}", shard_, e.what());
        }
    }
    return log_appender(dma_file::create_truncated(snapshot_path(), snapshot_open_options()), 0);
}

// The log's directory was asked once, at open(): a buffered log's snapshots
// open buffered at once, with no statfs on this reactor for each one.
open_options shard_log::snapshot_open_options() const noexcept {
    return open_options{.allow_buffered_io = true, .buffered_io = buffered_};
}

// The snapshot: every live key as it is while the scan passes (changes made
// meanwhile are also in rewrite_tail_, which follows the snapshot, so the new
// log replays to the current state). Runs in the low-share compaction queue.
void shard_log::rewrite() {
    const auto started = clock::now();
    try {
        auto out = std::make_unique<log_appender>(open_snapshot_file());
        // Room for a whole cycle, written now on this file rather than later
        // on the live log beside its commits.
        reserve_if_room(*out, preallocation_room(0));
        // Small writes, synced every few MiB (as Redis's
        // aof-rewrite-incremental-fsync): no commit of the live log waits
        // behind a big write or a big flush (measured: a catch-up written in
        // one go stalled commits for 43-58 ms).
        std::uint64_t synced = 0;
        auto write_out = [&](std::string& data) {
            for (std::size_t pos = 0; pos < data.size(); pos += rewrite_chunk) {
                if (closing_) throw std::runtime_error("the server is stopping");
                out->append(std::string_view(data).substr(pos, rewrite_chunk));
                if (out->end() - synced >= rewrite_sync_every) {
                    out->sync();
                    synced = out->end();
                }
            }
            data.clear();
        };
        std::string buf;
        encode_header(buf, shard_, shard_count_, rewrite_generation_);
        std::size_t cursor = 0;
        do {
            if (closing_) throw std::runtime_error("the server is stopping");
            cursor = store_.scan(cursor, 256, [&](const item_view& v) {
                encode_set(buf, rewrite_generation_, v.key, v.value, v.flags,
                           expiry_millis(v.expiry));
            });
            if (buf.size() >= rewrite_chunk) write_out(buf);
            maybe_yield();
        } while (cursor != 0);
        // Catch up with the changes made meanwhile until few are left.
        do {
            buf.append(rewrite_tail_);
            rewrite_tail_.clear();
            room_moved();
            write_out(buf);
        } while (rewrite_tail_.size() > 64 * 1024);
        out->sync();
        rewrite_appender_ = std::move(out);
        rewrite_ready_ = true;
        if (writer_idle_) {
            writer_idle_ = false;
            writer_cv_.notify_one();
        }
        logger().info("shard {}: log snapshot written in {:.3f} s", shard_,
                      std::chrono::duration<double>(clock::now() - started).count());
    } catch (const std::exception& e) {
        abort_rewrite(e);
    }
}

void shard_log::abort_rewrite(const std::exception& e) {
    logger().warn("shard {}: log rewrite abandoned: {}", shard_, e.what());
    rewriting_ = false;
    rewrite_ready_ = false;
    rewrite_tail_.clear();
    std::string().swap(rewrite_tail_);
    room_moved();
    rewrite_appender_.reset();
    try {
        remove_file(snapshot_path());
    } catch (const io_error& err) {
        if (err.error_number() != ENOENT)
            logger().warn("shard {}: removing {}: {}", shard_, snapshot_path(), err.what());
    }
}

// Makes the synced snapshot the log in one atomic step. A replaced log small
// enough to keep swaps names with it, then becomes the spare: true. (A crash
// between the two leaves the old log as log.rewrite, removed at start.)
bool shard_log::install_snapshot() {
    const std::string log = directory() + "/log";
    if (!spare_ && appender_.file().size() <= max_spare) {
        try {
            rewrite_appender_->file().exchange(log);
        } catch (const io_error& e) {
            if (e.error_number() != EINVAL) throw;
            rewrite_appender_->file().rename(log);  // no RENAME_EXCHANGE here
            return false;
        }
        // The snapshot is the log now: nothing here may abort the rewrite.
        try {
            rename_file(snapshot_path(), spare_path());
            return true;
        } catch (const io_error& e) {
            logger().warn("shard {}: keeping the replaced log as the spare: {}", shard_, e.what());
        }
        try {
            remove_file(snapshot_path());  // so no snapshot reuses what retire() frees
        } catch (const io_error& e) {
            logger().error("shard {}: removing the replaced log: {}", shard_, e.what());
        }
        return false;
    }
    rewrite_appender_->file().rename(log);
    return false;
}

// In the writer, between batches: the rest of the tail goes to the new file,
// which then replaces the old log atomically (rename, directory fsync).
void shard_log::finish_rewrite() {
    rewrite_ready_ = false;
    const std::uint64_t old_size = appender_.end();
    // Records appended while this suspends keep going to rewrite_tail_ (and
    // pending_): they become what the new file still lacks.
    const std::string tail = std::move(rewrite_tail_);
    rewrite_tail_.clear();
    bool kept_as_spare = false;
    try {
        rewrite_appender_->append(tail);
        rewrite_appender_->sync();
        kept_as_spare = install_snapshot();
    } catch (const std::exception& e) {
        abort_rewrite(e);
        return;
    }
    try {
        sync_directory(directory());
    } catch (const io_error& e) {
        logger().error("shard {}: fsync of {} after the log rewrite failed: {}", shard_,
                       directory(), e.what());
    }
    if (extender_.valid()) extender_.get();  // it works on the old file
    wait_for_syncer();                       // so does the syncer
    retire(std::move(appender_), kept_as_spare);
    appender_ = std::move(*rewrite_appender_);
    rewrite_appender_.reset();
    generation_ = rewrite_generation_;
    // The new file holds everything but what came since the tail was taken
    // (what was pending before is in the snapshot or the tail).
    pending_ = std::move(rewrite_tail_);
    rewrite_tail_.clear();
    rewriting_ = false;
    synced_ = true;
    last_sync_ = clock::now();
    durable_ = appended_ - pending_.size();
    written_ = durable_;
    durable_moved();
    ++rewrites_;
    ++syncs_;
    logger().info("shard {}: log rewritten: {} -> {} bytes", shard_, old_size, appender_.end());
    check_room();
}

}  // namespace percore::kv

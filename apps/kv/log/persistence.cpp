#include "log/persistence.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <system_error>

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

constexpr std::uint64_t low_water = 1 << 20;  // preallocated room kept ahead of the data
// Below this much room a fiber extends the file beside the writer, so group
// commits never wait for the zero writes of a preallocation (measured, durable
// SETs at pipeline 16 without compaction: p99 33-52 ms with the writer
// extending inline, 7-9 ms with this fiber, 2-5 ms for a file preallocated
// whole at start).
constexpr std::uint64_t extend_below = 4 << 20;
// The most a log gets preallocated ahead in one go (preallocation_room):
// for a compaction's new log, and for the log opened at start.
constexpr std::uint64_t max_preallocation = 128 << 20;
constexpr std::uint64_t start_preallocation = 32 << 20;
constexpr auto disk_retry = 250ms;  // how often a full disk is looked at again

// Converts absolute unix milliseconds to the steady clock, given "now" on both.
time_point from_millis(std::int64_t ms, time_point steady_now, std::int64_t sys_now_ms) {
    if (ms == 0) return no_expiry;
    constexpr std::int64_t far = std::int64_t{100} * 365 * 24 * 3600 * 1000;  // ~100 years
    const std::int64_t delta = std::min(ms - sys_now_ms, far);
    return steady_now + std::chrono::duration_cast<duration>(std::chrono::milliseconds(delta));
}

}  // namespace

namespace detail {

void reserve_if_room(log_appender& appender, std::uint64_t room) {
    try {
        appender.reserve(room);
    } catch (const io_error& e) {
        if (e.error_number() != ENOSPC) throw;
    }
}

std::int64_t expiry_millis(time_point expiry) {
    if (expiry == no_expiry) return 0;
    return std::max<std::int64_t>(to_unix_millis(expiry), 1);
}

}  // namespace detail

std::int64_t unix_now_millis() noexcept {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

bool replay_record(kv::store& store, const log_record& r, time_point steady_now,
                   std::int64_t unix_now_ms) {
    switch (r.type) {
        case record_type::set: {
            set_options o;
            o.flags = r.flags;
            o.expiry = from_millis(r.expiry_ms, steady_now, unix_now_ms);
            return store.set(r.key, r.value, o) == store_result::stored;
        }
        case record_type::remove:
            store.remove(r.key);
            return true;
        case record_type::expire:
            store.touch(r.key, from_millis(r.expiry_ms, steady_now, unix_now_ms));
            return true;
        case record_type::flush:
            store.flush();
            return true;
        case record_type::header:
            return true;
    }
    return true;
}

fsync_mode parse_fsync_mode(std::string_view text) {
    if (text == "always") return fsync_mode::always;
    if (text == "everysec") return fsync_mode::everysec;
    if (text == "no") return fsync_mode::no;
    throw config_error("--fsync '" + std::string(text) + "' is not one of always, everysec, no");
}

std::string_view fsync_mode_name(fsync_mode mode) noexcept {
    switch (mode) {
        case fsync_mode::always:
            return "always";
        case fsync_mode::everysec:
            return "everysec";
        case fsync_mode::no:
            return "no";
    }
    return "everysec";
}

shard_log::shard_log(const persistence_config& config, kv::store& store, unsigned shard,
                     unsigned shard_count)
    : config_(config),
      store_(store),
      shard_(shard),
      shard_count_(shard_count),
      mode_(config.fsync) {}

shard_log::~shard_log() {
    if (store_observer_attached_) store_.set_observer(nullptr);
}

std::string shard_log::directory() const {
    return config_.data_dir + "/shard-" + std::to_string(shard_);
}

std::string shard_log::snapshot_path() const {
    return directory() + "/log.rewrite";
}

std::string shard_log::spare_path() const {
    return directory() + "/log.spare";
}

// --- start-up --------------------------------------------------------------------------

void shard_log::open() {
    const std::string dir = directory();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);  // start-up only: before serving
    if (ec) throw config_error("cannot create " + dir + ": " + ec.message());
    if (std::filesystem::exists(snapshot_path())) {
        logger().info("{}: removing an unfinished log rewrite", snapshot_path());
        remove_file(snapshot_path());
    }
    // Not reused across runs: only this process knows its records are of
    // an older generation than any snapshot it will write.
    if (std::filesystem::exists(spare_path())) remove_file(spare_path());
    const std::string path = dir + "/log";
    const auto started = clock::now();
    dma_file file = dma_file::create(path, open_options{.allow_buffered_io = true});
    buffered_ = file.buffered();
    if (file.buffered()) {
        logger().warn("{}: the file system ({}) cannot do direct I/O: the log is written buffered",
                      path, file_system_name(dir));
    }

    // Replay, expired keys dropped. The store reports nothing yet.
    const time_point steady_now = clock::now();
    const std::int64_t sys_now = unix_now_millis();
    std::uint64_t refused = 0;
    auto apply = [&](const log_record& r) {
        if (r.type == record_type::header && (r.shard != shard_ || r.shard_count != shard_count_)) {
            throw config_error(path + ": belongs to shard " + std::to_string(r.shard) + " of " +
                               std::to_string(r.shard_count) + ", not shard " +
                               std::to_string(shard_) + " of " + std::to_string(shard_count_));
        }
        if (!replay_record(store_, r, steady_now, sys_now)) ++refused;
    };
    const scan_result scanned = scan_log(file, config_.repair, apply);
    replayed_ = scanned.records;
    const double seconds = std::chrono::duration<double>(clock::now() - started).count();
    logger().info("shard {}: replayed {} records, {} bytes of {} in {:.3f} s: {} keys", shard_,
                  scanned.records, scanned.end, path, seconds, store_.size());
    if (refused > 0) {
        logger().warn("shard {}: {} logged sets did not fit in --max-memory at replay", shard_,
                      refused);
    }
    if (file.size() != scanned.end) file.truncate(scanned.end);
    generation_ = scanned.end == 0 ? first_generation : scanned.generation;
    appender_ = log_appender(std::move(file), scanned.end);
    // Less at start, which waits for it (~0.1 s) before serving.
    reserve_if_room(appender_, std::min(preallocation_room(scanned.end), start_preallocation));
    appender_.reserve(low_water);
    if (scanned.end == 0) {
        encode_header(pending_, shard_, shard_count_, generation_);
        appended(pending_.size());
    }
    compaction_queue_ = &create_task_queue(100, latency::not_important(),
                                           "kv-compaction-" + std::to_string(shard_));
    gauges_.push_back(std::make_unique<shard_gauge>(
        "kv_log_failed", "1 once a write or fdatasync of the shard's log failed (writes refused).",
        [this] { return failed_ ? 1.0 : 0.0; }));
    gauges_.push_back(std::make_unique<shard_gauge>(
        "kv_log_disk_full", "1 while the shard's log has no room on disk (writes refused).",
        [this] { return disk_full_ ? 1.0 : 0.0; }));
    gauges_.push_back(std::make_unique<shard_gauge>(
        "kv_log_buffered_bytes", "Records in memory not yet written to the log.",
        [this] { return static_cast<double>(buffered_bytes()); }));
    last_sync_ = clock::now();
    store_.set_observer(this);
    store_observer_attached_ = true;
    writer_ = spawn(spawn_options{.name = "kv-log-writer"}, [this] { writer_loop(); });
    if (mode_ == fsync_mode::always) {
        syncer_ = spawn(spawn_options{.name = "kv-log-syncer"}, [this] { syncer_loop(); });
    }
}

bool shard_log::close() {
    if (!appender_.is_open()) return true;
    closing_ = true;
    room_moved();  // writers waiting for the buffer go on (their changes are written below)
    store_.set_observer(nullptr);
    store_observer_attached_ = false;
    if (rewriter_.valid()) rewriter_.get();  // aborts at its next step, or finishes
    writer_cv_.notify_one();
    if (writer_.valid()) writer_.get();  // writes what is pending first
    if (syncer_.valid()) {
        stop_syncer_ = true;  // once it synced what the writer wrote
        syncer_cv_.notify_one();
        syncer_.get();
    }
    if (extender_.valid()) extender_.get();
    if (retired_.valid()) retired_.get();
    bool ok = !failed_;
    if (failed_) {
        logger().error(
            "shard {}: the log failed earlier: changes acknowledged since may not be durable ({} "
            "bytes never written)",
            shard_, pending_.size());
    }
    try {
        if (!failed_) {
            sync_file();
            ++syncs_;
        }
        appender_.close();
    } catch (const std::exception& e) {
        logger().error("shard {}: closing the log failed: {}", shard_, e.what());
        return false;
    }
    if (ok) logger().info("shard {}: log closed at {} bytes", shard_, appender_.end());
    return ok;
}

// Every fdatasync of the log (but a compaction's snapshot) goes through here.
void shard_log::sync_file() {
    if (config_.test_faults.sync_error != 0)
        throw io_error(config_.test_faults.sync_error,
                       "fdatasync " + directory() + "/log (injected fault)");
    appender_.sync();
}

// --- the record side (never suspends) -------------------------------------------------

void shard_log::appended(std::size_t bytes) {
    appended_ += bytes;
    ++records_;
    if (writer_idle_) {
        writer_idle_ = false;
        writer_cv_.notify_one();
    }
}

template <typename Encode>
void shard_log::log_change(Encode&& encode) {
    const std::size_t before = pending_.size();
    encode(pending_, generation_);
    if (rewriting_) encode(rewrite_tail_, rewrite_generation_);
    appended(pending_.size() - before);
}

void shard_log::on_set(const item_view& item) {
    log_change([&](std::string& out, std::uint32_t generation) {
        encode_set(out, generation, item.key, item.value, item.flags, expiry_millis(item.expiry));
    });
}

void shard_log::on_remove(std::string_view key) {
    log_change(
        [&](std::string& out, std::uint32_t generation) { encode_remove(out, generation, key); });
}

void shard_log::on_expire(std::string_view key, time_point expiry) {
    log_change([&](std::string& out, std::uint32_t generation) {
        encode_expire(out, generation, key, expiry_millis(expiry));
    });
}

void shard_log::on_flush() {
    log_change([&](std::string& out, std::uint32_t generation) { encode_flush(out, generation); });
}

void shard_log::sync() {
    if (mode_ != fsync_mode::always) return;
    const std::uint64_t target = appended_;
    if (durable_ >= target) return;
    if (failed_) throw log_failed();
    promise<void> done;
    future<void> durable = done.get_future();
    sync_waiters_.push_back({target, std::move(done)});
    durable.get();
}

io_error shard_log::log_failed() const {
    return io_error(
        EIO, "shard " + std::to_string(shard_) + ": the log failed, a change may not be durable");
}

// durable_ moved, or the log failed: wakes the sync() callers it concerns
// and whoever waits for the syncer.
void shard_log::durable_moved() {
    while (!sync_waiters_.empty() && (failed_ || sync_waiters_.front().target <= durable_)) {
        if (failed_) {
            sync_waiters_.front().done.set_exception(std::make_exception_ptr(log_failed()));
        } else {
            sync_waiters_.front().done.set_value();
        }
        sync_waiters_.pop_front();
    }
    durable_cv_.notify_all();
    room_moved();
}

void shard_log::wait_for_room_slow() {
    ++buffer_waits_;
    std::unique_lock lock(room_mutex_);
    while (buffered_bytes() > config_.buffer_limit && !failed_ && !closing_) room_cv_.wait(lock);
}

void shard_log::room_moved() {
    room_cv_.notify_all();
}

log_stats shard_log::stats() const {
    log_stats s;
    s.log_bytes = appender_.end();
    s.live_bytes = live_log_bytes();
    s.records = records_;
    s.syncs = syncs_;
    s.rewrites = rewrites_;
    s.replayed = replayed_;
    s.buffered = buffered_bytes();
    s.buffer_waits = buffer_waits_;
    s.disk_full = disk_full_;
    s.failed = failed_;
    s.rewriting = rewriting_;
    return s;
}

// --- the writer fiber --------------------------------------------------------------------

void shard_log::writer_loop() {
    for (;;) {
        if (rewrite_ready_) {
            finish_rewrite();
            continue;
        }
        if (failed_) {
            if (closing_) return;
            std::unique_lock lock(writer_mutex_);
            writer_cv_.wait(lock);
            continue;
        }
        if (!pending_.empty()) {
            write_batch();
            continue;
        }
        if (closing_) return;
        if (disk_full_) {
            sleep_for(disk_retry);
            check_room();
            continue;
        }
        std::unique_lock lock(writer_mutex_);
        writer_idle_ = true;
        if (mode_ == fsync_mode::everysec && !synced_) {
            writer_cv_.wait_until(lock, last_sync_ + 1s);
            writer_idle_ = false;
            if (pending_.empty() && !synced_ && clock::now() >= last_sync_ + 1s) {
                try {
                    sync_file();
                    ++syncs_;
                    synced_ = true;
                } catch (const io_error& e) {
                    // As under always: a retry could report success for data
                    // the kernel already dropped (fsyncgate), so the log stops.
                    logger().error(
                        "shard {}: log fdatasync failed, refusing writes from now on: {}", shard_,
                        e.what());
                    failed_ = true;
                    durable_moved();
                }
                last_sync_ = clock::now();
            }
        } else {
            writer_cv_.wait(lock);
            writer_idle_ = false;
        }
    }
}

// Writes what accumulated (group commit), then syncs as the mode says.
void shard_log::write_batch() {
    writing_.swap(pending_);
    const std::uint64_t target = appended_;
    if (config_.test_faults.write_delay.count() > 0) sleep_for(config_.test_faults.write_delay);
    try {
        appender_.append(writing_);
    } catch (const io_error& e) {
        // Nothing lost: the batch goes back in front of what came since.
        writing_.append(pending_);
        pending_.swap(writing_);
        writing_.clear();
        if (e.error_number() == ENOSPC && closing_) {
            logger().error("shard {}: disk full while stopping: {} bytes of records not logged",
                           shard_, pending_.size());
            failed_ = true;
            durable_moved();
            return;
        }
        if (e.error_number() == ENOSPC) {
            if (!disk_full_) {
                logger().warn("shard {}: disk full writing the log: refusing writes", shard_);
            }
            disk_full_ = true;
            sleep_for(disk_retry);
            check_room();
            return;
        }
        logger().error("shard {}: writing the log failed, refusing writes from now on: {}", shard_,
                       e.what());
        failed_ = true;
        durable_moved();
        return;
    }
    if (writing_.capacity() > (16u << 20)) {
        std::string().swap(writing_);
    } else {
        writing_.clear();
    }
    room_moved();
    synced_ = false;
    if (mode_ == fsync_mode::always) {
        // One write, then one fdatasync for the whole group (measured: twice
        // the SET/s of a single RWF_DSYNC write at pipeline 16), done by the
        // syncer while this fiber writes the next group.
        written_ = target;
        syncer_cv_.notify_one();
    } else {
        if (mode_ == fsync_mode::everysec && clock::now() >= last_sync_ + 1s) {
            try {
                sync_file();
                ++syncs_;
                synced_ = true;
                last_sync_ = clock::now();
            } catch (const io_error& e) {
                logger().error("shard {}: log fdatasync failed, refusing writes from now on: {}",
                               shard_, e.what());
                failed_ = true;
                durable_moved();
                return;
            }
        }
        durable_ = target;  // everysec and no: durable_ counts what was written
        durable_moved();
    }
    check_room();
    maybe_rewrite();
}

void shard_log::syncer_loop() {
    for (;;) {
        if (written_ <= durable_ || failed_) {
            if (stop_syncer_) return;
            std::unique_lock lock(syncer_mutex_);
            syncer_cv_.wait(lock);
            continue;
        }
        // A sync covers every write that completed before it began.
        const std::uint64_t target = written_;
        syncing_ = true;
        try {
            sync_file();
        } catch (const io_error& e) {
            logger().error("shard {}: log fdatasync failed, refusing writes from now on: {}",
                           shard_, e.what());
            failed_ = true;
        }
        syncing_ = false;
        if (!failed_) {
            ++syncs_;
            durable_ = std::max(durable_, target);
        }
        durable_moved();
    }
}

// Until the syncer is done with what was written (or the log failed): the
// appender may be swapped after this.
void shard_log::wait_for_syncer() {
    std::unique_lock lock(sync_mutex_);
    while (syncing_ || (written_ > durable_ && !failed_)) durable_cv_.wait(lock);
}

// Keeps low_water bytes preallocated; a disk that cannot give them is full
// (writes refused) until it can again. Below extend_below, a background fiber
// extends the file before the writer would have to.
void shard_log::check_room() {
    if (appender_.room() < extend_below && appender_.room() >= low_water)
        extend_in_background(extend_below);
    if (appender_.room() < low_water) {
        try {
            appender_.reserve(low_water);
        } catch (const io_error& e) {
            if (e.error_number() == ENOSPC && drop_spare()) {
                check_room();  // again, with the spare's blocks freed
                return;
            }
            if (e.error_number() != ENOSPC) {
                logger().error("shard {}: preallocating the log failed: {}", shard_, e.what());
            } else if (!disk_full_) {
                logger().warn("shard {}: disk full (log preallocation): refusing writes", shard_);
            }
            disk_full_ = true;
            return;
        }
    }
    if (disk_full_ && pending_.empty()) {
        disk_full_ = false;
        logger().info("shard {}: disk space is back: accepting writes", shard_);
    }
}

// A new log (at start, and each compaction's snapshot) is preallocated up to
// where the next compaction would start, capped: extending the live log makes
// every commit meanwhile pay for the extent changes in the journal (measured
// at pipeline 1: p99 5.5 ms while a fiber extends it, 1.6-2.2 ms otherwise).
std::uint64_t shard_log::preallocation_room(std::uint64_t end) const noexcept {
    const auto threshold = std::max(
        config_.rewrite_min_size,
        static_cast<std::uint64_t>(config_.rewrite_factor * static_cast<double>(live_log_bytes())));
    // Half again as much: the log grows on while the compaction runs.
    const std::uint64_t target = threshold + threshold / 2;
    const std::uint64_t room = target > end ? target - end : 0;
    return std::clamp(room, extend_below, max_preallocation);
}

void shard_log::extend_in_background(std::uint64_t room) {
    if (disk_full_ || closing_ || clock::now() < extend_retry_at_) return;
    if (extender_.valid()) {
        if (!extender_.available()) return;  // one extension at a time
        extender_.get();
    }
    extender_ = spawn(spawn_options{.name = "kv-log-extend"}, [this, room] {
        try {
            appender_.reserve(room);
        } catch (const io_error& e) {
            // Not fatal here: the writer's own reserve(low_water) reports a
            // full disk and refuses writes when the room really runs out.
            if (e.error_number() != ENOSPC)
                logger().warn("shard {}: extending the log ahead failed: {}", shard_, e.what());
            extend_retry_at_ = clock::now() + disk_retry;
        }
    });
}

}  // namespace percore::kv

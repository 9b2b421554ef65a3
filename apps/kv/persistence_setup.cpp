// The data directory's layout and its changes happen at start-up, before any
// client is served, so plain std::filesystem calls (blocking metadata
// syscalls) are used for listing, creating and renaming directories there.
#include "persistence_setup.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include "percore/errors.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"

namespace percore::kv {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view reshard_dir = "reshard";
constexpr std::string_view commit_file = "COMMIT";

std::string shard_dir(const std::string& root, unsigned shard) {
    return root + "/shard-" + std::to_string(shard);
}

// The shard numbers of the DIR/shard-N directories.
std::vector<unsigned> shard_dirs(const std::string& root) {
    std::vector<unsigned> shards;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
        const std::string name = entry.path().filename().string();
        if (!entry.is_directory() || name.rfind("shard-", 0) != 0) continue;
        unsigned n = 0;
        const char* b = name.data() + 6;
        const char* e = name.data() + name.size();
        auto [p, err] = std::from_chars(b, e, n);
        if (err != std::errc() || p != e || b == e) continue;
        shards.push_back(n);
    }
    if (ec) throw config_error("cannot list --data-dir " + root + ": " + ec.message());
    std::sort(shards.begin(), shards.end());
    return shards;
}

void fsync_dir(const std::string& path) {
    sync_directory(path);
}

void check(const std::error_code& ec, const std::string& what) {
    if (ec) throw config_error(what + ": " + ec.message());
}

// Finishes a committed re-sharding (idempotent), or drops one that did not
// reach its commit point.
void settle_resharding(const std::string& root) {
    const std::string staging = root + "/" + std::string(reshard_dir);
    std::error_code ec;
    if (!fs::exists(staging)) return;
    const std::string commit = staging + "/" + std::string(commit_file);
    if (!fs::exists(commit)) {
        logger().warn("{}: dropping an unfinished re-sharding (the old layout stays)", staging);
        fs::remove_all(staging, ec);
        check(ec, "removing " + staging);
        fsync_dir(root);
        return;
    }
    unsigned count = 0;
    std::ifstream(commit) >> count;
    if (count == 0) throw config_error(commit + ": unreadable shard count");
    for (unsigned s = 0; s < count; ++s) {
        const std::string from = shard_dir(staging, s);
        if (!fs::exists(from)) continue;  // moved before a crash
        fs::remove_all(shard_dir(root, s), ec);
        check(ec, "removing " + shard_dir(root, s));
        fs::rename(from, shard_dir(root, s), ec);
        check(ec, "renaming " + from);
    }
    for (unsigned s : shard_dirs(root)) {
        if (s < count) continue;
        fs::remove_all(shard_dir(root, s), ec);
        check(ec, "removing " + shard_dir(root, s));
    }
    fsync_dir(root);
    fs::remove_all(staging, ec);
    check(ec, "removing " + staging);
    fsync_dir(root);
    logger().info("{}: re-sharding to {} shards committed", root, count);
}

// On each new shard: loads its keys from every old log into its store, then
// writes them as its log in the staging directory.
void reshard_one(db_shard& shard, const persistence_config& config, unsigned old_count) {
    const unsigned self = this_shard_id();
    const unsigned count = shard_count();
    store& st = shard.store();
    const time_point steady_now = clock::now();
    const std::int64_t unix_ms = unix_now_millis();
    for (unsigned j = 0; j < old_count; ++j) {
        const std::string path = shard_dir(config.data_dir, j) + "/log";
        if (!fs::exists(path)) continue;
        dma_file file =
            dma_file::open(path, open_options{.read_only = true, .allow_buffered_io = true});
        scan_log(file, config.repair, [&](const log_record& r) {
            switch (r.type) {
                case record_type::header:
                    if (r.shard != j || r.shard_count != old_count) {
                        throw config_error(path + ": belongs to shard " + std::to_string(r.shard) +
                                           " of " + std::to_string(r.shard_count) +
                                           ", expected shard " + std::to_string(j) + " of " +
                                           std::to_string(old_count));
                    }
                    return;
                case record_type::flush: {
                    // Old shard j's flush: only its keys go.
                    std::vector<std::string> doomed;
                    std::size_t cursor = 0;
                    do {
                        cursor = st.scan(cursor, 1024, [&](const item_view& v) {
                            if (owner_shard(v.key, old_count) == j) doomed.emplace_back(v.key);
                        });
                    } while (cursor != 0);
                    for (const auto& k : doomed) st.remove(k);
                    return;
                }
                default:
                    if (owner_shard(r.key, count) != self) return;
                    replay_record(st, r, steady_now, unix_ms);
                    return;
            }
        });
        file.close();
    }
    const std::string dir = shard_dir(config.data_dir + "/" + std::string(reshard_dir), self);
    std::error_code ec;
    fs::create_directories(dir, ec);
    check(ec, "creating " + dir);
    log_appender out(
        dma_file::create_truncated(dir + "/log", open_options{.allow_buffered_io = true}), 0);
    std::string buf;
    encode_header(buf, self, count, first_generation);
    std::size_t cursor = 0;
    do {
        cursor = st.scan(cursor, 256, [&](const item_view& v) {
            encode_set(
                buf, first_generation, v.key, v.value, v.flags,
                v.expiry == no_expiry ? 0 : std::max<std::int64_t>(to_unix_millis(v.expiry), 1));
        });
        if (buf.size() >= (1u << 20)) {
            out.append(buf);
            buf.clear();
        }
    } while (cursor != 0);
    out.append(buf);
    out.sync();
    out.close();
    fsync_dir(dir);
    logger().info("shard {}: re-sharding: {} keys taken from {} old logs", self, st.size(),
                  old_count);
}

}  // namespace

void open_persistence(db& database, const persistence_config& config) {
    if (!config.enabled()) return;
    const std::string& root = config.data_dir;
    std::error_code ec;
    fs::create_directories(root, ec);
    check(ec, "cannot create --data-dir " + root);
    settle_resharding(root);
    const std::vector<unsigned> dirs = shard_dirs(root);
    const unsigned count = shard_count();
    for (unsigned i = 0; i < dirs.size(); ++i) {
        if (dirs[i] != i) {
            throw config_error(
                "--data-dir " + root + ": shard directories are not shard-0 to shard-" +
                std::to_string(dirs.size() - 1) + " (shard-" + std::to_string(i) + " is missing)");
        }
    }
    const auto old_count = static_cast<unsigned>(dirs.size());
    const auto started = clock::now();
    if (old_count != 0 && old_count != count) {
        logger().warn(
            "--data-dir {} was written by {} shards, this run has {}: re-distributing "
            "the keys",
            root, old_count, count);
        database.invoke_on_all(
            [&config, old_count](db_shard& shard) { reshard_one(shard, config, old_count); });
        const std::string staging = root + "/" + std::string(reshard_dir);
        {
            std::ofstream commit(staging + "/" + std::string(commit_file));
            commit << count << "\n";
            commit.flush();
            if (!commit) throw config_error("cannot write " + staging + "/COMMIT");
        }
        {
            dma_file f = dma_file::open(staging + "/" + std::string(commit_file),
                                        open_options{.allow_buffered_io = true});
            f.fdatasync();
            f.close();
        }
        fsync_dir(staging);  // the commit point
        settle_resharding(root);
    }
    database.invoke_on_all([&config](db_shard& shard) {
        auto log =
            std::make_unique<shard_log>(config, shard.store(), this_shard_id(), shard_count());
        log->open();
        shard.set_log(std::move(log));
    });
    logger().info("persistence: {} shard logs open in {} (fsync {}) after {:.3f} s", count, root,
                  config.fsync == fsync_mode::always     ? "always"
                  : config.fsync == fsync_mode::everysec ? "everysec"
                                                         : "no",
                  std::chrono::duration<double>(clock::now() - started).count());
}

std::size_t start_log_rewrites(db& database) {
    return database.map_reduce(
        [](db_shard& shard) -> std::size_t { return shard.log() && shard.log()->start_rewrite(); },
        std::size_t{0}, [](std::size_t a, std::size_t b) { return a + b; });
}

log_stats collect_log_stats(db& database) {
    return database.map_reduce(
        [](db_shard& shard) { return shard.log() ? shard.log()->stats() : log_stats{}; },
        log_stats{},
        [](log_stats a, const log_stats& b) {
            a.log_bytes += b.log_bytes;
            a.live_bytes += b.live_bytes;
            a.records += b.records;
            a.syncs += b.syncs;
            a.rewrites += b.rewrites;
            a.replayed += b.replayed;
            a.buffered += b.buffered;
            a.buffer_waits += b.buffer_waits;
            a.disk_full = a.disk_full || b.disk_full;
            a.failed = a.failed || b.failed;
            a.rewriting = a.rewriting || b.rewriting;
            return a;
        });
}

void sync_all_shards(db& database) {
    if (!database.local().log() || !database.local().log()->always()) return;
    database.invoke_on_all([](db_shard& shard) { shard.sync(); });
}

}  // namespace percore::kv

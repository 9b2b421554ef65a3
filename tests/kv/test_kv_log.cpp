// The kv shard log: replay of every kind of change, group commit, compaction
// while writing (and its reuse of the replaced log), and re-sharding a data
// directory. The record format is in test_kv_log_format.cpp. Files live
// under $PERCORE_TEST_DIR or /var/tmp (a disk, not tmpfs).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "db.hpp"
#include "log/log_file.hpp"
#include "log/log_format.hpp"
#include "log/persistence.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/metrics.hpp"
#include "percore/smp.hpp"
#include "percore/timer.hpp"
#include "persistence_setup.hpp"
#include "shards.hpp"
#include "store/store.hpp"
#include "temp_dir.hpp"
#include "whole_files.hpp"

using namespace percore;
using namespace percore::kv;
using percore::testing::read_file;
using percore::testing::temp_dir;
using percore::testing::write_file;

namespace {

persistence_config test_config(const std::string& dir, fsync_mode mode) {
    persistence_config c;
    c.data_dir = dir;
    c.fsync = mode;
    return c;
}

// Opens a shard log over a fresh store, runs body, closes.
void with_log(const persistence_config& c, const std::function<void(store&, shard_log&)>& body) {
    std::exception_ptr error;
    testing::run_in_reactor([&] {
        store st;
        shard_log log(c, st, 0, 1);
        try {
            log.open();
            body(st, log);
        } catch (...) {
            error = std::current_exception();
        }
        log.close();
    });
    if (error) std::rethrow_exception(error);
}

std::map<std::string, std::string> contents(store& st) {
    std::map<std::string, std::string> m;
    std::size_t cursor = 0;
    do {
        cursor = st.scan(cursor, 100, [&](const item_view& v) {
            m.emplace(std::string(v.key), std::string(v.value));
        });
    } while (cursor != 0);
    return m;
}

}  // namespace

TEST_CASE("a shard log replays every kind of change", "[kv_log]") {
    temp_dir dir;
    for (auto mode : {fsync_mode::always, fsync_mode::everysec, fsync_mode::no}) {
        const auto c = test_config(dir.path + "/m" + std::to_string(static_cast<int>(mode)), mode);
        with_log(c, [](store& st, shard_log& log) {
            for (int i = 0; i < 1000; ++i) st.set("k" + std::to_string(i), "v" + std::to_string(i));
            st.remove("k1");
            set_options past;
            past.expiry = clock::now() - std::chrono::seconds(1);
            st.set("k2", "expired at once", past);
            set_options soon;
            soon.expiry = clock::now() + std::chrono::milliseconds(200);
            st.set("k3", "expires soon", soon);
            set_options later;
            later.expiry = clock::now() + std::chrono::hours(1);
            later.flags = 99;
            st.set("k4", "keeps", later);
            st.touch("k5", clock::now() + std::chrono::hours(2));
            st.incr_by("counter", 5);
            st.incr_by("counter", 3);
            st.set("num", "10");
            st.incr("num", 1);  // in place
            st.set("app", "a");
            set_options ap;
            ap.mode = set_mode::append;
            st.set("app", "bc", ap);
            log.sync();
        });
        ::usleep(250 * 1000);  // k3's TTL passes while the server is down
        with_log(c, [](store& st, shard_log&) {
            CHECK_FALSE(st.peek("k1"));
            CHECK_FALSE(st.peek("k2"));
            CHECK_FALSE(st.peek("k3"));
            auto k4 = st.peek("k4");
            REQUIRE(k4);
            CHECK(k4->value == "keeps");
            CHECK(k4->flags == 99);
            CHECK(k4->expiry > clock::now() + std::chrono::minutes(59));
            auto k5 = st.peek("k5");
            REQUIRE(k5);
            CHECK(k5->expiry > clock::now() + std::chrono::minutes(119));
            CHECK(st.peek("counter")->value == "8");
            CHECK(st.peek("num")->value == "11");
            CHECK(st.peek("app")->value == "abc");
            CHECK(st.peek("k999")->value == "v999");
            CHECK(st.size() == 1000 - 3 + 3);  // k1, k2, k3 gone; counter, num, app new
            st.flush();
        });
        with_log(c, [](store& st, shard_log&) { CHECK(st.size() == 0); });
    }
}

TEST_CASE("sync() returns once the caller's own changes are written and synced", "[kv_log]") {
    temp_dir dir;
    const auto c = test_config(dir.path, fsync_mode::always);
    const std::string log_path = dir.path + "/shard-0/log";
    // The log's first bytes as a crash would find them (the data is small).
    auto logged = [&] {
        std::string bytes(256 * 1024, '\0');
        const int fd = ::open(log_path.c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        const ssize_t n = ::pread(fd, bytes.data(), bytes.size(), 0);
        ::close(fd);
        REQUIRE(n > 0);
        bytes.resize(static_cast<std::size_t>(n));
        return bytes;
    };
    with_log(c, [&](store& st, shard_log& log) {
        // Twenty clients in flight at once: each commit covers some of them,
        // and only those may return.
        int missing = 0;
        std::uint64_t syncs_seen = 0;
        std::vector<future<void>> clients;
        for (int f = 0; f < 20; ++f) {
            clients.push_back(spawn([&, f] {
                for (int i = 0; i < 50; ++i) {
                    const std::string key = "client" + std::to_string(f) + "-" + std::to_string(i);
                    const std::uint64_t syncs_before = log.stats().syncs;
                    st.set(key, "v");
                    log.sync();
                    if (logged().find(key) == std::string::npos) ++missing;
                    if (log.stats().syncs > syncs_before) ++syncs_seen;
                }
            }));
        }
        for (auto& client : clients) client.get();
        CHECK(missing == 0);
        CHECK(syncs_seen == 1000);  // no sync() returned without an fdatasync after its set
        CHECK_FALSE(log.needs_sync());
    });
}

TEST_CASE("compaction while writes continue keeps the latest state", "[kv_log]") {
    temp_dir dir;
    auto c = test_config(dir.path, fsync_mode::always);
    c.rewrite_min_size = 1 << 30;  // only by hand
    std::map<std::string, std::string> expected;
    std::uint64_t before = 0, after = 0;
    with_log(c, [&](store& st, shard_log& log) {
        for (int round = 0; round < 20; ++round)
            for (int i = 0; i < 2000; ++i)
                st.set("key" + std::to_string(i), "r" + std::to_string(round));
        log.sync();
        before = log.stats().log_bytes;
        REQUIRE(log.start_rewrite());
        CHECK_FALSE(log.start_rewrite());  // one at a time
        // Keep writing (and syncing, as clients would) while it runs.
        int n = 0;
        while (log.stats().rewrites == 0) {
            st.set("key" + std::to_string(n % 2000), "during" + std::to_string(n));
            st.set("new" + std::to_string(n), "x");
            if (n % 50 == 0) st.remove("key" + std::to_string((n / 50) % 2000));
            ++n;
            log.sync();
            REQUIRE(n < 2000000);
        }
        for (int i = 0; i < 100; ++i) st.set("after" + std::to_string(i), "y");
        log.sync();
        after = log.stats().log_bytes;
        expected = contents(st);
    });
    CHECK(after < before / 4);
    with_log(c, [&](store& st, shard_log&) {
        const auto got = contents(st);
        CHECK(got.size() == expected.size());
        for (const auto& [k, v] : expected) {
            auto it = got.find(k);
            if (it == got.end()) {
                FAIL_CHECK("missing " << k);
            } else if (it->second != v) {
                FAIL_CHECK(k << " is " << it->second << ", expected " << v);
            }
        }
        for (const auto& [k, v] : got)
            if (!expected.count(k)) FAIL_CHECK("extra " << k << " = " << v);
    });
}

// Waits (yielding to the writer and the rewrite) until `done` or ~10 s.
template <typename F>
bool wait_for(F done) {
    for (int i = 0; i < 1000 && !done(); ++i) sleep_for(std::chrono::milliseconds(10));
    return done();
}

ino_t inode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_ino;
}

TEST_CASE("each compaction writes over the log the one before replaced", "[kv_log]") {
    temp_dir dir;
    auto c = test_config(dir.path, fsync_mode::always);
    c.rewrite_min_size = 1 << 30;  // only by hand
    const std::string log_path = dir.path + "/shard-0/log";
    const std::string spare_path = dir.path + "/shard-0/log.spare";
    std::map<std::string, std::string> expected;
    std::string crash_image;  // the log's bytes as a crash would leave them
    with_log(c, [&](store& st, shard_log& log) {
        ino_t spare = 0;
        for (int round = 0; round < 4; ++round) {
            // Fewer keys each round: each snapshot is shorter than the file it reuses.
            for (int i = 0; i < 4000 - 800 * round; ++i)
                st.set("key" + std::to_string(i), "round" + std::to_string(round));
            st.remove("key" + std::to_string(round));
            log.sync();
            const ino_t replaced = inode_of(log_path);
            REQUIRE(log.start_rewrite());
            REQUIRE(wait_for([&] { return log.stats().rewrites == std::uint64_t(round) + 1; }));
            INFO("round " << round);
            CHECK(inode_of(spare_path) == replaced);
            if (round > 0) CHECK(inode_of(log_path) == spare);  // the spare, reused
            spare = inode_of(spare_path);
        }
        for (int i = 0; i < 100; ++i) st.set("after" + std::to_string(i), "y");
        log.sync();
        expected = contents(st);
        crash_image = read_file(log_path);
        // Older records follow the end (not only zeros).
        const std::string_view past =
            std::string_view(crash_image)
                .substr(std::min<std::size_t>(crash_image.size(), log.stats().log_bytes + 4096));
        CHECK(std::count(past.begin(), past.end(), '\0') < static_cast<long>(past.size()));
    });
    CHECK(std::filesystem::file_size(log_path) < crash_image.size());  // cut at close
    auto check = [&](store& st) {
        const auto got = contents(st);
        CHECK(got == expected);
    };
    with_log(c, [&](store& st, shard_log&) { check(st); });
    CHECK_FALSE(std::filesystem::exists(spare_path));  // removed at start
    // As if killed: the reused file, not cut at its end, replays the same.
    write_file(log_path, crash_image);
    with_log(c, [&](store& st, shard_log&) { check(st); });
}

TEST_CASE("auto-compaction compares the log with the live data's log size", "[kv_log]") {
    temp_dir dir;
    auto c = test_config(dir.path, fsync_mode::always);
    c.rewrite_min_size = 64 * 1024;
    c.rewrite_factor = 2.0;
    // 2000 keys of 8 + 20 bytes: 60 log bytes each, but 112 bytes of item
    // memory, so a rule on memory would wait until the log is 3.7x the data.
    const auto key = [](int i) {
        return "key-" + std::string(4 - std::to_string(i).size(), '0') + std::to_string(i);
    };
    SECTION("the same keys overwritten: the log passes 2x the live data, a rewrite starts") {
        with_log(c, [&](store& st, shard_log& log) {
            for (int round = 0; round < 3; ++round) {
                for (int i = 0; i < 2000; ++i) st.set(key(i), std::string(20, 'a' + round));
                log.sync();
            }
            // 3 rounds: the log is 3x what a snapshot would write.
            REQUIRE(wait_for([&] { return log.stats().rewrites == 1; }));
            const log_stats s = log.stats();
            CHECK(s.live_bytes == header_record_size + 2000 * (set_record_overhead + 28));
            CHECK(s.log_bytes == s.live_bytes);  // the new log is exactly the snapshot
        });
        with_log(c, [&](store& st, shard_log&) {
            CHECK(st.size() == 2000);
            CHECK(st.peek(key(1999))->value == std::string(20, 'c'));
        });
    }
    SECTION("all data live: the log stays at 1x, no rewrite") {
        with_log(c, [&](store& st, shard_log& log) {
            for (int i = 0; i < 6000; ++i) st.set("k" + key(i), std::string(20, 'v'));
            log.sync();
            sleep_for(std::chrono::milliseconds(200));  // would be started by now
            const log_stats s = log.stats();
            CHECK(s.log_bytes == s.live_bytes);
            CHECK(s.log_bytes > 3 * c.rewrite_min_size);
            CHECK_FALSE(s.rewriting);
            CHECK(s.rewrites == 0);
        });
    }
}

TEST_CASE("a data dir written with another shard count is re-distributed", "[kv_log]") {
    temp_dir dir;
    db_config config;
    config.max_memory = 64 << 20;
    config.persistence = test_config(dir.path, fsync_mode::always);
    auto run = [&](unsigned smp, const std::function<void(db&)>& body) {
        std::exception_ptr error;
        runtime_config rc;
        rc.smp = smp;
        run_shards(rc, [&] {
            db database;
            database.start(config);
            try {
                open_persistence(database, config.persistence);
                body(database);
            } catch (...) {
                error = std::current_exception();
            }
            database.stop();
            return 0;
        });
        if (error) std::rethrow_exception(error);
    };
    auto key = [](int i) { return "key:" + std::to_string(i); };
    // Written by 2 shards, with a flush in the middle and removals.
    run(2, [&](db& d) {
        d.invoke_on_all([&](db_shard& s) {
            for (int i = 0; i < 100; ++i) {
                if (owner_shard(key(i), 2) == this_shard_id()) s.store().set(key(i), "old");
            }
        });
        flush_all(d, clock::now());
        d.invoke_on_all([&](db_shard& s) {
            for (int i = 0; i < 3000; ++i) {
                if (owner_shard(key(i), 2) != this_shard_id()) continue;
                s.store().set(key(i), "v" + std::to_string(i));
                if (i % 10 == 0) s.store().remove(key(i));
            }
            s.sync();
        });
    });
    auto check_all = [&](db& d) {
        const unsigned n = shard_count();
        auto counts = d.map_reduce(
            [&](db_shard& s) {
                int ok = 0;
                for (int i = 0; i < 3000; ++i) {
                    auto v = s.store().peek(key(i));
                    const bool mine = owner_shard(key(i), n) == this_shard_id();
                    if (!mine && v) return -1;  // a key on the wrong shard
                    if (mine && i % 10 == 0 && v) return -1;
                    if (mine && i % 10 != 0 && v && v->value == "v" + std::to_string(i)) ++ok;
                }
                return ok;
            },
            0, [](int a, int b) { return a < 0 || b < 0 ? -1 : a + b; });
        CHECK(counts == 2700);
    };
    run(1, check_all);
    CHECK(std::filesystem::exists(dir.path + "/shard-0"));
    CHECK_FALSE(std::filesystem::exists(dir.path + "/shard-1"));
    run(2, check_all);
    CHECK(std::filesystem::exists(dir.path + "/shard-1"));
    run(2, check_all);  // same count: plain replay
}

TEST_CASE("past --log-buffer-limit writers wait for a slow disk, and nothing is lost", "[kv_log]") {
    temp_dir dir;
    // (With always, each writer waits in sync() for its own commit: bounded anyway.)
    for (auto mode : {fsync_mode::everysec, fsync_mode::no}) {
        const std::string name = std::string(fsync_mode_name(mode));
        auto c = test_config(dir.path + "/" + name, mode);
        c.buffer_limit = 256 << 10;
        c.test_faults.write_delay =
            std::chrono::milliseconds(20);  // a disk slower than the clients
        c.rewrite_min_size = 1 << 30;
        constexpr int writers = 4;
        constexpr int per_writer = 1000;
        const std::string value(1000, 'v');
        std::uint64_t peak = 0;
        std::uint64_t waits = 0;
        with_log(c, [&](store& st, shard_log& log) {
            // Each fiber plays a connection: a change, then what the front
            // ends do after each batch (db_shard::sync).
            std::vector<future<void>> clients;
            for (int w = 0; w < writers; ++w) {
                clients.push_back(spawn([&, w] {
                    for (int i = 0; i < per_writer; ++i) {
                        REQUIRE(st.set("w" + std::to_string(w) + "-" + std::to_string(i), value) ==
                                store_result::stored);
                        peak = std::max(peak, log.buffered_bytes());
                        log.wait_for_room();
                    }
                }));
            }
            for (auto& client : clients) client.get();
            waits = log.stats().buffer_waits;
        });
        INFO("--fsync " << name);
        CHECK(waits > 0);  // without the limit all 4 MB queue: no writer suspends
        // Each writer may add one change past the limit before it waits.
        CHECK(peak <= c.buffer_limit + writers * (value.size() + 64));
        with_log(c, [&](store& st, shard_log&) {
            CHECK(st.size() == writers * per_writer);
            auto v = st.peek("w3-999");
            REQUIRE(v);
            CHECK(v->value == value);
        });
    }
}

TEST_CASE("a failed fdatasync under everysec fails the log as under always", "[kv_log]") {
    temp_dir dir;
    auto c = test_config(dir.path, fsync_mode::everysec);
    c.test_faults.sync_error = EIO;
    bool closed = true;
    testing::run_in_reactor([&] {
        store st;
        shard_log log(c, st, 0, 1);
        log.open();
        CHECK(st.set("a", "1") == store_result::stored);
        // The writer's fdatasync is due within a second of the write.
        for (int i = 0; i < 500 && !log.stats().failed; ++i)
            sleep_for(std::chrono::milliseconds(10));
        CHECK(log.stats().failed);
        // Visible in the metrics and --stats (the app's shard gauges).
        double failed_gauge = -1;
        for (const auto& g : snapshot_this_shard().gauges)
            if (g.name == "kv_log_failed") failed_gauge = g.value;
        CHECK(failed_gauge == 1);
        CHECK_FALSE(st.accepting_writes());
        CHECK(st.set("b", "2") == store_result::no_disk);  // refused, not acknowledged
        closed = log.close();
    });
    CHECK_FALSE(closed);  // the app exits non-zero then
}

TEST_CASE("close() reports a final fdatasync that failed", "[kv_log]") {
    temp_dir dir;
    auto c = test_config(dir.path, fsync_mode::no);  // no fdatasync before the last one
    c.test_faults.sync_error = EIO;
    bool closed = true;
    bool failed_before_close = true;
    testing::run_in_reactor([&] {
        store st;
        shard_log log(c, st, 0, 1);
        log.open();
        st.set("a", "1");
        failed_before_close = log.stats().failed;
        closed = log.close();
    });
    CHECK_FALSE(failed_before_close);
    CHECK_FALSE(closed);
}

// Last in this file: the flag it sets is process-wide and stays set.
TEST_CASE("a shard whose log did not close cleanly makes the app's exit status non-zero",
          "[kv_log]") {
    temp_dir dir;
    db_config config;
    config.max_memory = 64 << 20;
    config.persistence = test_config(dir.path, fsync_mode::no);  // the one fdatasync: at the stop
    config.persistence.test_faults.sync_error = EIO;
    bool clean_before = false;
    bool clean_after = true;
    runtime_config rc;
    rc.smp = 2;
    run_shards(rc, [&] {
        db database;
        database.start(config);
        open_persistence(database, config.persistence);
        database.invoke_on_all(
            [](db_shard& s) { s.store().set("k" + std::to_string(this_shard_id()), "v"); });
        clean_before = db_shard::logs_closed_cleanly();
        database.stop();  // kv's main checks this after stopping, and returns 1
        clean_after = db_shard::logs_closed_cleanly();
        return 0;
    });
    CHECK(clean_before);
    CHECK_FALSE(clean_after);
}

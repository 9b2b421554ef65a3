// The kv log: record format, torn tails, corruption, the shard log's replay,
// compaction while writing, and re-sharding a data directory. Files live
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
#include "log_file.hpp"
#include "log_format.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/smp.hpp"
#include "percore/timer.hpp"
#include "persistence.hpp"
#include "persistence_setup.hpp"
#include "shards.hpp"
#include "store.hpp"
#include "temp_dir.hpp"

using namespace percore;
using namespace percore::kv;

namespace {

using percore::testing::temp_dir;

void write_file(const std::string& path, std::string_view bytes) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
}

std::string read_file(const std::string& path) {
    std::string out;
    int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        REQUIRE(n >= 0);
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

// Scans a file in a reactor; returns the keys of the set records seen.
struct scanned {
    scan_result result;
    std::vector<std::string> keys;
};
scanned scan_file(const std::string& path, bool repair) {
    scanned s;
    std::exception_ptr error;
    testing::run_in_reactor([&] {
        try {
            dma_file f =
                dma_file::open(path, open_options{.read_only = true, .allow_buffered_io = true});
            s.result = scan_log(f, repair, [&](const log_record& r) {
                if (r.type == record_type::set) s.keys.emplace_back(r.key);
            });
            f.close();
        } catch (...) {
            error = std::current_exception();
        }
    });
    if (error) std::rethrow_exception(error);
    return s;
}

// A log image of `generation`: a header and `n` set records with keys
// `prefix`-i; offsets[i] is where record i starts.
std::string make_image(int n, std::vector<std::size_t>& offsets, std::uint32_t generation = 5,
                       const std::string& prefix = "key-") {
    std::string image;
    encode_header(image, 0, 1, generation);
    for (int i = 0; i < n; ++i) {
        offsets.push_back(image.size());
        encode_set(image, generation, prefix + std::to_string(i), std::string(10 + i % 7, 'v'), 0,
                   0);
    }
    return image;
}

// A record as format version 1 wrote it (no generation: CRCs seeded with 0).
std::string version1_record(record_type type, std::string_view payload) {
    std::string r(record_header_size, '\0');
    r += payload;
    auto put32 = [&](std::size_t at, std::uint32_t v) {
        for (int i = 0; i < 4; ++i) r[at + i] = static_cast<char>(v >> (8 * i));
    };
    put32(4, static_cast<std::uint32_t>(payload.size()));
    put32(8, crc32c(0, r.data() + record_header_size, payload.size()));
    r[12] = static_cast<char>(type);
    r[13] = 1;
    put32(0, crc32c(0, r.data() + 4, record_header_size - 4));
    return r;
}

}  // namespace

TEST_CASE("log records round trip", "[kv_log]") {
    std::string buf;
    encode_header(buf, 3, 8, 9);
    encode_set(buf, 9, "k1", "value one", 42, 1700000000123);
    encode_set(buf, 9, "", "", 0, 0);  // empty key and value are legal
    encode_remove(buf, 9, "gone");
    encode_expire(buf, 9, "k1", 1800000000000);
    encode_flush(buf, 9);
    std::string_view rest = buf;
    std::vector<log_record> got;
    for (;;) {
        auto r = decode_record(rest, 9);
        if (r.status != decode_status::ok) {
            CHECK(r.status == decode_status::need_more);
            CHECK(rest.empty());
            break;
        }
        got.push_back(r.record);
        rest.remove_prefix(r.size);
    }
    REQUIRE(got.size() == 6);
    CHECK(got[0].type == record_type::header);
    CHECK(got[0].shard == 3);
    CHECK(got[0].shard_count == 8);
    CHECK(got[0].generation == 9);
    CHECK(got[1].type == record_type::set);
    CHECK(got[1].key == "k1");
    CHECK(got[1].value == "value one");
    CHECK(got[1].flags == 42);
    CHECK(got[1].expiry_ms == 1700000000123);
    CHECK(got[2].key.empty());
    CHECK(got[2].value.empty());
    CHECK(got[3].type == record_type::remove);
    CHECK(got[3].key == "gone");
    CHECK(got[4].type == record_type::expire);
    CHECK(got[4].expiry_ms == 1800000000000);
    CHECK(got[5].type == record_type::flush);
    // Zeros after the data are the end marker.
    CHECK(decode_record(std::string(16, '\0'), 9).status == decode_status::end);
    // CRC32C check value ("123456789" -> 0xe3069283).
    CHECK(crc32c(0, "123456789", 9) == 0xe3069283u);
}

TEST_CASE("decode_record rejects damage anywhere in a record", "[kv_log]") {
    std::string rec;
    encode_set(rec, 3, "some-key", "some value", 7, 0);
    for (std::size_t i = 0; i < rec.size(); ++i) {
        for (int bit = 0; bit < 8; ++bit) {
            std::string bad = rec;
            bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
            auto r = decode_record(bad, 3);
            // Never a different valid record; a damaged length may ask for more.
            CHECK(r.status != decode_status::ok);
        }
        // Every prefix needs more.
        CHECK(decode_record(std::string_view(rec).substr(0, i), 3).status ==
              decode_status::need_more);
    }
    // Random garbage: never ok by accident, never crashes.
    std::mt19937 rng(7);
    for (int n = 0; n < 20000; ++n) {
        std::string g(rng() % 64, '\0');
        for (auto& c : g) c = static_cast<char>(rng());
        auto r = decode_record(g, 3);
        CHECK(r.status != decode_status::ok);
        if (r.status == decode_status::need_more) CHECK(r.size > g.size());
    }
}

TEST_CASE("a record is valid only in a file of its own generation", "[kv_log]") {
    std::string header, rec;
    encode_header(header, 0, 1, 4);
    encode_set(rec, 4, "key", "value", 0, 0);
    CHECK(decode_record(rec, 4).status == decode_status::ok);
    for (std::uint32_t other : {0u, 3u, 5u, 0xffffffffu}) {
        INFO("decoded as generation " << other);
        CHECK(decode_record(rec, other).status == decode_status::corrupt);
        // The header is read before the generation is known.
        const auto h = decode_record(header, other);
        REQUIRE(h.status == decode_status::ok);
        CHECK(h.record.generation == 4);
    }
    std::string zero;
    encode_header(zero, 0, 1, 0);  // 0 belongs to version 1 files only
    CHECK(decode_record(zero, 0).status == decode_status::corrupt);
    CHECK(next_generation(4) == 5);
    CHECK(next_generation(0xffffffffu) == 1);
}

TEST_CASE("a version 1 log is read, and appended to, as generation 0", "[kv_log]") {
    temp_dir dir;
    const std::string path = dir.path + "/log";
    std::string header_payload = "PKVLOG01";
    header_payload.append("\0\0\0\0\1\0\0\0", 8);  // shard 0 of 1
    std::string image = version1_record(record_type::header, header_payload);
    std::string set;
    encode_set(set, 0, "old", "v1", 0, 0);  // version 2 bytes, generation 0...
    image += version1_record(record_type::set,
                             std::string_view(set).substr(record_header_size));  // ... as v1
    encode_set(image, 0, "new", "v2", 0, 0);  // what this build appends to it
    write_file(path, image + std::string(4096, '\0'));
    const auto s = scan_file(path, false);
    CHECK(s.keys == std::vector<std::string>{"old", "new"});
    CHECK(s.result.end == image.size());
    CHECK(s.result.generation == 0);
}

TEST_CASE("a reused log replays only its own generation, even after a torn write", "[kv_log]") {
    // A compaction writes its snapshot over the log it replaced two rounds
    // before: the older records stay past the new end, at the same offsets as
    // the new ones where the records have the same sizes.
    temp_dir dir;
    const std::string path = dir.path + "/log";
    std::vector<std::size_t> old_offsets, offsets;
    const std::string old_image = make_image(400, old_offsets, 5, "old-");
    const std::string image = make_image(200, offsets, 6, "new-");
    REQUIRE(old_offsets[100] == offsets[100]);  // the records line up
    auto only_new = [](const std::vector<std::string>& keys) {
        for (const auto& k : keys)
            if (k.rfind("new-", 0) != 0) return false;
        return true;
    };
    SECTION("the end of the new records is the end") {
        write_file(path, image + old_image.substr(image.size()));
        const auto s = scan_file(path, false);
        CHECK(s.keys.size() == 200);
        CHECK(only_new(s.keys));
        CHECK(s.result.end == image.size());
        CHECK(s.result.generation == 6);
    }
    SECTION("a write that did not reach the disk exposes older records") {
        // The last 50 new records never landed: the old ones are there instead.
        const std::size_t cut = offsets[150];
        write_file(path, image.substr(0, cut) + old_image.substr(cut));
        const auto s = scan_file(path, false);
        CHECK(s.keys.size() == 150);
        CHECK(only_new(s.keys));
        CHECK(s.result.end == cut);
    }
}

TEST_CASE("a torn tail is cut at every byte of the last record", "[kv_log]") {
    temp_dir dir;
    std::vector<std::size_t> offsets;
    const std::string image = make_image(20, offsets);
    const std::size_t last = offsets.back();
    const std::string path = dir.path + "/log";
    for (std::size_t cut = last; cut < image.size(); ++cut) {
        // Cut with the file ending there, and cut followed by zero padding.
        for (bool padded : {false, true}) {
            std::string file = image.substr(0, cut);
            if (padded) file.append(4096, '\0');
            write_file(path, file);
            const auto s = scan_file(path, false);
            INFO("cut at " << cut << (padded ? " + zeros" : ""));
            CHECK(s.result.end == last);
            CHECK(s.keys.size() == 19);
            CHECK_FALSE(s.result.repaired);
        }
    }
    // Uncut: everything, with or without zeros after.
    write_file(path, image + std::string(5000, '\0'));
    const auto s = scan_file(path, false);
    CHECK(s.keys.size() == 20);
    CHECK(s.result.end == image.size());
}

TEST_CASE("appends go on while another fiber extends the log", "[kv_log]") {
    temp_dir dir;
    const std::string path = dir.path + "/log";
    std::vector<std::size_t> offsets;
    const std::string image = make_image(60000, offsets);  // ~2.4 MB: past the first chunk
    REQUIRE(image.size() > (2u << 20));
    testing::run_in_reactor([&] {
        log_appender out(dma_file::create(path, open_options{.allow_buffered_io = true}), 0);
        // Extends to 16 MiB in many zero writes (as the log's background
        // extension does) while the appends below run out of the first
        // chunk and reserve too: every record must still read back.
        auto extension = spawn([&] { out.reserve(16 << 20); });
        for (std::size_t pos = 0; pos < image.size(); pos += 4096)
            out.append(std::string_view(image).substr(pos, 4096));
        extension.get();
        CHECK(out.room() >= (16u << 20) - image.size());
        out.sync();
        out.close();
    });
    const auto s = scan_file(path, false);
    CHECK(s.keys.size() == 60000);
    CHECK(s.result.end == image.size());
}

TEST_CASE("a flipped bit in the middle is an error; --repair-log truncates there", "[kv_log]") {
    temp_dir dir;
    std::vector<std::size_t> offsets;
    std::string image = make_image(100, offsets);
    const std::size_t victim = offsets[40];
    image[victim + 20] = static_cast<char>(image[victim + 20] ^ 0x10);  // in the payload
    const std::string path = dir.path + "/log";
    write_file(path, image);
    try {
        scan_file(path, false);
        FAIL("corruption in the middle was not reported");
    } catch (const config_error& e) {
        const std::string what = e.what();
        CHECK(what.find(path) != std::string::npos);
        CHECK(what.find("offset " + std::to_string(victim)) != std::string::npos);
        CHECK(what.find("--repair-log") != std::string::npos);
    }
    const auto s = scan_file(path, true);
    CHECK(s.result.repaired);
    CHECK(s.result.end == victim);
    CHECK(s.keys.size() == 40);
    // The file itself is not modified by a scan.
    CHECK(read_file(path) == image);
}

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

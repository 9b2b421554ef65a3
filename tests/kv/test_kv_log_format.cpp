// The kv log's format and files: records, generations, torn tails,
// corruption in the middle, reused files and the appender (log/log_format.hpp,
// log/log_file.hpp). The shard log itself is in test_kv_log.cpp. Files live
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
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "log/log_file.hpp"
#include "log/log_format.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "shards.hpp"
#include "temp_dir.hpp"
#include "whole_files.hpp"

using namespace percore;
using namespace percore::kv;
using percore::testing::read_file;
using percore::testing::write_file;

namespace {

using percore::testing::temp_dir;

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
    // The pre-checksum test passes every record the encoder writes.
    CHECK(could_start_record(rec));
    CHECK(could_start_record(header));
    CHECK_FALSE(could_start_record(std::string(16, '\x07')));  // no such type or version
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

// dma_file, the streams and buffered_file on real files. Direct I/O needs a
// disk file system: the files live under $PERCORE_TEST_DIR or /var/tmp (not
// /tmp, which may be tmpfs). The tmpfs and ENOSPC cases, which mount file
// systems, are in test_file_mounts.cpp.
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "file_patterns.hpp"
#include "percore/fiber.hpp"
#include "percore/file.hpp"
#include "percore/reactor.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"
#include "temp_dir.hpp"

using namespace percore;
using percore::testing::run_in_reactor;

using percore::testing::temp_dir;
using namespace percore::testing::file_patterns;

TEST_CASE("dma_file round trips many sizes and offsets, aligned or not") {
    temp_dir dir;
    run_in_reactor([&] {
        auto f = dma_file::create_truncated(dir.file("rt"));
        REQUIRE_FALSE(f.buffered());
        const std::size_t a = f.alignment();
        INFO("alignment " << a << ", memory alignment " << f.memory_alignment());
        REQUIRE(a >= 512);
        REQUIRE((a & (a - 1)) == 0);
        const std::uint64_t seed = 1;
        const std::size_t total = 4 << 20;
        write_pattern(f, 0, total, seed);
        REQUIRE(f.size() == total);

        // Reads: every alignment case, crossing blocks, at and past the end.
        std::mt19937_64 rng(7);
        std::vector<std::pair<std::uint64_t, std::size_t>> cases = {
            {0, 1},       {0, a},         {1, a},           {a - 1, 2}, {a, 3 * a},
            {7, 100'000}, {total - 1, 1}, {total - 10, 10}, {0, total}, {12345, 1 << 20}};
        for (int i = 0; i < 200; ++i) {
            std::uint64_t pos = rng() % total;
            std::size_t len = 1 + rng() % (i % 2 ? 300'000 : 5000);
            cases.emplace_back(pos, std::min<std::size_t>(len, total - pos));
        }
        for (auto [pos, len] : cases) {
            auto buf = f.read_at(pos, len);
            INFO("read_at(" << pos << ", " << len << ")");
            REQUIRE(buf.size() == len);
            REQUIRE(pattern_mismatch(buf.data(), pos, len, seed) == -1);
        }
        // Short at the end, empty past it: never more than the file has.
        REQUIRE(f.read_at(total - 100, 1000).size() == 100);
        REQUIRE(f.read_at(total + 5, 1000).empty());
        REQUIRE(f.read_at(total, a).empty());

        // Overwrites of many aligned sizes at many aligned offsets.
        const std::uint64_t seed2 = 2;
        std::vector<std::uint8_t> model(total);
        fill_pattern(model.data(), 0, total, seed);
        for (std::size_t len : {a, 2 * a, 4096ul, 3 * a, 65536ul, 131072ul, 1ul << 20}) {
            std::uint64_t pos = align_down(rng() % (total - len), a);
            write_pattern(f, pos, len, seed2);
            fill_pattern(model.data() + pos, pos, len, seed2);
        }
        // Past the end: the file grows.
        write_pattern(f, total, 3 * a, seed2);
        model.resize(total + 3 * a);
        fill_pattern(model.data() + total, total, 3 * a, seed2);
        REQUIRE(f.size() == total + 3 * a);
        auto all = f.read_at(0, model.size() + 4096);
        REQUIRE(all.size() == model.size());
        REQUIRE(std::memcmp(all.data(), model.data(), model.size()) == 0);

        // read_into: aligned caller memory, counted short at the end.
        auto buf = f.allocate_buffer(8 * a);
        REQUIRE(f.read_into(total, buf.data(), 8 * a) == 3 * a);
        f.close();
    });
}

TEST_CASE("dma_file refuses misaligned writes with a clear error and writes nothing") {
    temp_dir dir;
    run_in_reactor([&] {
        auto f = dma_file::create_truncated(dir.file("mis"));
        const std::size_t a = f.alignment();
        write_pattern(f, 0, 4 * a, 3);
        auto buf = f.allocate_buffer(2 * a);
        std::memset(buf.data(), 0xAB, buf.size());
        std::string msg;
        REQUIRE(expect_io_error([&] { f.write_at(1, buf); }, msg) == EINVAL);
        CHECK(msg.find(dir.file("mis")) != std::string::npos);
        CHECK(msg.find("position 1 is not a multiple") != std::string::npos);
        REQUIRE(expect_io_error([&] { f.write_at(0, buf.data(), a + 3); }, msg) == EINVAL);
        CHECK(msg.find("length") != std::string::npos);
        REQUIRE(expect_io_error([&] { f.write_at(0, buf.data() + 8, a); }, msg) == EINVAL);
        CHECK(msg.find("memory address") != std::string::npos);
        REQUIRE(expect_io_error([&] { f.read_into(3, buf.data(), a); }, msg) == EINVAL);
        auto back = f.read_at(0, 4 * a);
        REQUIRE(pattern_mismatch(back.data(), 0, 4 * a, 3) == -1);
        REQUIRE(f.size() == 4 * a);
    });
}

TEST_CASE("dma_file errors carry errno and path") {
    temp_dir dir;
    run_in_reactor([&] {
        std::string msg;
        REQUIRE(expect_io_error([&] { dma_file::open(dir.file("missing")); }, msg) == ENOENT);
        CHECK(msg.find(dir.file("missing")) != std::string::npos);

        auto f = dma_file::create(dir.file("e"));
        write_pattern(f, 0, 4096, 1);
        f.close();
        f.close();  // idempotent
        REQUIRE(expect_io_error([&] { f.read_at(0, 10); }, msg) == EBADF);
        CHECK(msg.find(dir.file("e")) != std::string::npos);
        REQUIRE(expect_io_error([&] { f.fdatasync(); }, msg) == EBADF);

        // The kernel's own EBADF: writing a read-only descriptor.
        auto ro = dma_file::open(dir.file("e"), open_options{.read_only = true});
        auto buf = ro.allocate_buffer(4096);
        REQUIRE(expect_io_error([&] { ro.write_at(0, buf); }, msg) == EBADF);
        CHECK(msg.find("write " + dir.file("e")) != std::string::npos);
        ro.close();

        // rename follows the path; remove unlinks it.
        auto g = dma_file::open(dir.file("e"));
        g.rename(dir.file("renamed"));
        REQUIRE(g.path() == dir.file("renamed"));
        REQUIRE(g.read_at(0, 4096).size() == 4096);
        g.remove();
        REQUIRE(expect_io_error([&] { dma_file::open(dir.file("renamed")); }, msg) == ENOENT);
        REQUIRE(expect_io_error([&] { remove_file(dir.file("renamed")); }, msg) == ENOENT);
        g.close();

        // exchange swaps two names in one step; path() follows.
        auto one = dma_file::create(dir.file("one"));
        write_pattern(one, 0, 4096, 11);
        auto two = dma_file::create(dir.file("two"));
        write_pattern(two, 0, 8192, 22);
        one.exchange(dir.file("two"));
        REQUIRE(one.path() == dir.file("two"));
        REQUIRE(dma_file::open(dir.file("two"), open_options{.read_only = true}).size() == 4096);
        REQUIRE(dma_file::open(dir.file("one"), open_options{.read_only = true}).size() == 8192);
        REQUIRE(expect_io_error([&] { exchange_files(dir.file("one"), dir.file("none")); }, msg) ==
                ENOENT);
        CHECK(msg.find("exchange " + dir.file("one")) != std::string::npos);
        one.close();
        two.close();

        // fallocate and truncate change the size as asked.
        auto h = dma_file::create(dir.file("alloc"));
        h.allocate(0, 1 << 20);
        REQUIRE(h.size() == 1 << 20);
        h.allocate(1 << 20, 1 << 20, true);
        REQUIRE(h.size() == 1 << 20);
        h.truncate(1000);
        REQUIRE(h.size() == 1000);
        h.close();
    });
}

TEST_CASE("many fibers read and write one dma_file concurrently") {
    temp_dir dir;
    run_in_reactor([&] {
        auto f = dma_file::create_truncated(dir.file("conc"));
        constexpr unsigned writers = 16, readers = 16, blocks_per_writer = 64;
        constexpr std::size_t block = 4096;
        const std::uint64_t seed = 9;
        // Block b belongs to writer b % writers; written once, then immutable,
        // so a reader may check any block marked written.
        std::vector<std::uint64_t> written;
        unsigned writers_done = 0;
        std::uint64_t verified = 0;
        std::vector<future<void>> all;
        for (unsigned w = 0; w < writers; ++w) {
            all.push_back(spawn([&, w] {
                auto buf = f.allocate_buffer(block);
                for (unsigned i = 0; i < blocks_per_writer; ++i) {
                    std::uint64_t b = i * writers + w;
                    fill_pattern(buf.data(), b * block, block, seed);
                    f.write_at(b * block, buf);
                    written.push_back(b);
                }
                ++writers_done;
            }));
        }
        for (unsigned r = 0; r < readers; ++r) {
            all.push_back(spawn([&, r] {
                std::mt19937 rng(r);
                while (writers_done < writers) {
                    if (written.empty()) {
                        // Wait without spinning: the writers' I/O must complete.
                        sleep_for(std::chrono::microseconds(50));
                        continue;
                    }
                    std::uint64_t b = written[rng() % written.size()];
                    // Misaligned ranges inside the written block too.
                    std::uint64_t off = rng() % block;
                    std::size_t len = 1 + rng() % (block - off);
                    auto got = f.read_at(b * block + off, len);
                    REQUIRE(got.size() == len);
                    REQUIRE(pattern_mismatch(got.data(), b * block + off, len, seed) == -1);
                    ++verified;
                }
            }));
        }
        for (auto& x : all) x.get();
        CHECK(verified > 0);
        REQUIRE(written.size() == writers * blocks_per_writer);
        auto whole = f.read_at(0, written.size() * block);
        REQUIRE(whole.size() == written.size() * block);
        REQUIRE(pattern_mismatch(whole.data(), 0, whole.size(), seed) == -1);
        f.close();
    });
}

TEST_CASE("stream writer and reader move a 256 MiB file intact") {
    temp_dir dir;
    run_in_reactor([&] {
        const std::uint64_t total = (256ull << 20) + 12345;  // ends mid-block
        const std::uint64_t seed = 42;
        const auto before = reactor::local().stats();
        {
            dma_stream_writer w(dma_file::create_truncated(dir.file("big")));
            std::mt19937 rng(1);
            std::vector<std::uint8_t> chunk(300'000);
            std::uint64_t pos = 0;
            while (pos < total) {
                // Sizes from 1 byte to more than two buffers.
                std::size_t n = std::min<std::uint64_t>(total - pos, 1 + rng() % chunk.size());
                fill_pattern(chunk.data(), pos, n, seed);
                w.write(chunk.data(), n);
                pos += n;
            }
            REQUIRE(w.position() == total);
            w.close();
        }
        auto stats = reactor::local().stats();
        CHECK(stats.file_writes > before.file_writes);
        CHECK(stats.file_bytes_written - before.file_bytes_written >= total);
        CHECK(stats.file_fsyncs > before.file_fsyncs);

        dma_stream_reader r(dma_file::open(dir.file("big")), stream_options{.buffers = 6});
        REQUIRE(r.end() == total);  // truncated to the logical size
        std::mt19937 rng(2);
        std::vector<std::uint8_t> got(400'000);
        std::uint64_t pos = 0;
        int mode = 0;
        while (pos < total) {
            std::size_t want = 1 + rng() % got.size();
            std::size_t n = 0;
            switch (mode++ % 3) {
                case 0:
                    n = r.read(got.data(), want);
                    break;
                case 1: {
                    auto v = r.read_view(want);
                    std::memcpy(got.data(), v.data(), v.size());
                    n = v.size();
                    break;
                }
                default:
                    want = std::min<std::uint64_t>(want, total - pos);
                    r.read_exactly(got.data(), want);
                    n = want;
            }
            REQUIRE(n > 0);
            INFO("at " << pos);
            REQUIRE(pattern_mismatch(got.data(), pos, n, seed) == -1);
            pos += n;
        }
        REQUIRE(pos == total);
        REQUIRE(r.eof());
        REQUIRE(r.read(got.data(), 10) == 0);
        REQUIRE_THROWS_AS(r.read_exactly(got.data(), 1), end_of_file_error);
        CHECK(reactor::local().stats().file_bytes_read - stats.file_bytes_read >= total);
        r.close();
    });
}

TEST_CASE("streams handle a file many times larger than their buffer pool") {
    temp_dir dir;
    run_in_reactor([&] {
        // Two 8 KiB buffers for 3 MiB, single writes and reads larger than the pool.
        stream_options small{.buffer_size = 8192, .buffers = 2};
        const std::uint64_t total = (3 << 20) + 777;
        std::vector<std::uint8_t> data(total);
        fill_pattern(data.data(), 0, total, 5);
        dma_stream_writer w(dma_file::create_truncated(dir.file("pool")), small);
        w.write(data.data(), 100'000);
        w.write(data.data() + 100'000, total - 100'000);
        w.close();

        dma_stream_reader r(dma_file::open(dir.file("pool")), small);
        std::vector<std::uint8_t> back(total);
        r.read_exactly(back.data(), 1'000'000);
        r.read_exactly(back.data() + 1'000'000, total - 1'000'000);
        REQUIRE(r.eof());
        REQUIRE(std::memcmp(back.data(), data.data(), total) == 0);

        // A reader from the middle, bounded by an explicit end.
        dma_stream_reader mid(dma_file::open(dir.file("pool")), small, 12'345, 2'000'000);
        auto s = mid.read(5'000'000);
        REQUIRE(s.size() == 2'000'000 - 12'345);
        REQUIRE(std::memcmp(s.data(), data.data() + 12'345, s.size()) == 0);
        r.close();
        mid.close();
    });
}

TEST_CASE("what was flushed survives close and reopen, appends continue mid-block") {
    temp_dir dir;
    run_in_reactor([&] {
        const std::string path = dir.file("log");
        std::string expect;
        auto record = [&](int i) {
            return "record " + std::to_string(i) + std::string(i % 97, 'x') + "\n";
        };
        dma_stream_writer w(dma_file::create_truncated(path), stream_options{.buffer_size = 16384});
        for (int i = 0; i < 300; ++i) {
            w.write(record(i));
            expect += record(i);
            if (i % 50 == 7) {
                w.flush();
                // A second descriptor sees exactly the flushed bytes: the padded
                // tail is already truncated away.
                auto other = dma_file::open(path);
                REQUIRE(other.size() == expect.size());
                REQUIRE(other.read_at(0, expect.size() + 100).view() == expect);
                other.close();
            }
        }
        w.close();
        REQUIRE_THROWS_AS(w.write("late"), io_error);

        // Reopen and append from the logical end (mid-block), as a log does at start.
        auto f = dma_file::open(path);
        std::uint64_t end = f.size();
        REQUIRE(end == expect.size());
        dma_stream_writer w2(std::move(f), {}, end);
        for (int i = 300; i < 400; ++i) {
            w2.write(record(i));
            expect += record(i);
        }
        w2.close();
        dma_stream_reader r(dma_file::open(path));
        REQUIRE(r.read(expect.size() + 10) == expect);
        r.close();
    });
}

TEST_CASE("buffered_file reads and writes small files through the ring") {
    temp_dir dir;
    run_in_reactor([&] {
        const std::string path = dir.file("config");
        auto f = buffered_file::create(path, true);
        f.write_at(0, "hello ");
        f.write_at(6, "world");
        f.fdatasync();
        REQUIRE(f.size() == 11);
        REQUIRE(f.read_at(3, 100) == "lo world");
        REQUIRE(f.read_all() == "hello world");
        f.truncate(5);
        REQUIRE(f.read_all() == "hello");
        f.close();

        buffered_file::write_file_atomic(path, "version 2\n");
        REQUIRE(buffered_file::read_file(path) == "version 2\n");
        std::string big(200'000, 'b');
        buffered_file::write_file_atomic(path, big);
        REQUIRE(buffered_file::read_file(path) == big);
        REQUIRE_FALSE(std::filesystem::exists(path + ".tmp.0"));

        std::string msg;
        REQUIRE(expect_io_error([&] { buffered_file::read_file(dir.file("nope")); }, msg) ==
                ENOENT);
        CHECK(msg.find(dir.file("nope")) != std::string::npos);
    });
}

// dma_file where a test must mount a file system (root only): O_DIRECT on
// tmpfs, ENOSPC on a full tmpfs and on a full loop-mounted ext4. Its own
// executable so that, where mounting is not allowed, meson reports it as
// skipped (exit status 77, with the reasons on stderr) rather than passed.
#define CATCH_CONFIG_RUNNER
#include <sys/mount.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "file_patterns.hpp"
#include "percore/file.hpp"
#include "shards.hpp"
#include "temp_dir.hpp"

using namespace percore;
using namespace percore::testing::file_patterns;
using percore::testing::run_in_reactor;
using percore::testing::temp_dir;

namespace {

std::vector<std::string> skipped;  // reasons, reported by main

// Ends the calling test as skipped (Catch2 v2 has no SKIP): main turns any
// skip into exit status 77.
void skip(const std::string& reason) {
    skipped.push_back(Catch::getResultCapture().getCurrentTestName() + ": " + reason);
}

}  // namespace

TEST_CASE("O_DIRECT on tmpfs is a clear error unless buffered I/O is allowed") {
    tmpfs_mount mnt("4M");
    std::string base;
    if (mnt.mounted()) {
        base = mnt.dir.path;
    } else if (file_system_name("/dev/shm") == "tmpfs") {
        WARN("cannot mount a tmpfs (" << mnt.error << "): using /dev/shm");
        base = "/dev/shm";
    } else {
        return skip("cannot mount a tmpfs (" + mnt.error + ") and /dev/shm is not tmpfs");
    }
    const std::string path = base + "/percore-direct-" + std::to_string(::getpid());
    run_in_reactor([&] {
        std::string msg;
        REQUIRE(expect_io_error([&] { dma_file::create_truncated(path); }, msg) == EINVAL);
        INFO(msg);
        CHECK(msg.find(path) != std::string::npos);
        CHECK(msg.find("'tmpfs'") != std::string::npos);
        CHECK(msg.find("allow_buffered_io") != std::string::npos);
        CHECK_FALSE(std::filesystem::exists(path));  // a refused create leaves nothing behind

        auto f = dma_file::create_truncated(path, open_options{.allow_buffered_io = true});
        REQUIRE(f.buffered());
        write_pattern(f, 0, 16384, 4);
        auto back = f.read_at(100, 10'000);
        REQUIRE(pattern_mismatch(back.data(), 100, 10'000, 4) == -1);
        f.close();

        // Known to be buffered (a kv log's later files): opened so at once,
        // without O_DIRECT or statfs.
        auto known = dma_file::open(path, open_options{.buffered_io = true});
        REQUIRE(known.buffered());
        auto again = known.read_at(100, 10'000);
        REQUIRE(pattern_mismatch(again.data(), 100, 10'000, 4) == -1);
        known.close();

        // The streams work on it the same way.
        dma_stream_writer w(dma_file::open(path, open_options{.allow_buffered_io = true}));
        w.write(std::string(10'001, 'q'));
        w.close();
        dma_stream_reader r(dma_file::open(path, open_options{.allow_buffered_io = true}));
        REQUIRE(r.read(20'000) == std::string(10'001, 'q'));
        r.close();
        remove_file(path);
    });
}

namespace {

// Fills the file system under `dir` through a dma_file and a stream: both
// must report ENOSPC with the path, never succeed silently.
void check_enospc(const std::string& dir, open_options options) {
    run_in_reactor([&] {
        const std::string path = dir + "/full";
        auto f = dma_file::create_truncated(path, options);
        std::string msg;
        REQUIRE(expect_io_error([&] { f.allocate(0, 64 << 20); }, msg) == ENOSPC);
        CHECK(msg.find(path) != std::string::npos);
        auto buf = f.allocate_buffer(256 << 10);
        std::memset(buf.data(), 'f', buf.size());
        int err = 0;
        for (std::uint64_t pos = 0; pos < (64 << 20) && err == 0; pos += buf.size()) {
            err = expect_io_error([&] { f.write_at(pos, buf); }, msg);
        }
        REQUIRE(err == ENOSPC);
        CHECK(msg.find("write " + path) != std::string::npos);
        f.close();
        remove_file(path);

        const std::string log = dir + "/log";
        dma_stream_writer w(dma_file::create_truncated(log, options));
        std::string chunk(100'000, 'z');
        err = expect_io_error(
            [&] {
                for (int i = 0; i < 640; ++i) w.write(chunk);
                w.close();
            },
            msg);
        REQUIRE(err == ENOSPC);
        CHECK(msg.find(log) != std::string::npos);
        // Poisoned: later calls report the same failure.
        REQUIRE(expect_io_error([&] { w.flush(); }, msg) == ENOSPC);
    });
}

}  // namespace

TEST_CASE("a full tmpfs gives ENOSPC on the buffered path") {
    tmpfs_mount mnt("1M");
    if (!mnt.mounted()) return skip("cannot mount a 1 MiB tmpfs (" + mnt.error + ")");
    check_enospc(mnt.dir.path, open_options{.allow_buffered_io = true});
}

TEST_CASE("a full loop-mounted ext4 gives ENOSPC on the direct path") {
    temp_dir dir;
    const std::string image = dir.file("ext4.img"), mnt = dir.file("mnt");
    std::filesystem::create_directory(mnt);
    const std::string cmd = "truncate -s 8M " + image + " && mkfs.ext4 -q -F " + image +
                            " >/dev/null 2>&1 && mount -o loop " + image + " " + mnt +
                            " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0)
        return skip(
            "cannot make and loop-mount an ext4 image (needs root, mkfs.ext4, loop devices)");
    struct unmount {
        std::string path;
        ~unmount() { ::umount2(path.c_str(), MNT_DETACH); }
    } guard{mnt};
    check_enospc(mnt, open_options{});
}

int main(int argc, char* argv[]) {
    const int failed = Catch::Session().run(argc, argv);
    if (failed != 0) return failed;
    for (const auto& reason : skipped) std::cerr << "SKIPPED " << reason << "\n";
    return skipped.empty() ? 0 : 77;  // meson's exit status for a skipped test
}

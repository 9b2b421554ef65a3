// What the dma_file tests share (test_file.cpp, test_file_mounts.cpp):
// deterministic file contents, a small tmpfs mounted for one test, and
// catching an io_error's errno.
#pragma once

#include <sys/mount.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "percore/file.hpp"
#include "temp_dir.hpp"

namespace percore::testing::file_patterns {

// A tmpfs of `size` mounted for one test; mounted() is false where mounting
// is not permitted (not root, or a restricted container).
struct tmpfs_mount {
    temp_dir dir;
    std::string error;
    bool ok = false;
    explicit tmpfs_mount(const std::string& size) {
        std::string opts = "size=" + size;
        if (::mount("tmpfs", dir.path.c_str(), "tmpfs", 0, opts.c_str()) == 0) {
            ok = true;
        } else {
            error = std::strerror(errno);
        }
    }
    ~tmpfs_mount() {
        if (ok) ::umount2(dir.path.c_str(), MNT_DETACH);
    }
    bool mounted() const { return ok; }
    std::string file(const std::string& name) const { return dir.file(name); }
};

// Deterministic bytes: what a file holds at `pos` for `seed`.
inline std::uint8_t pattern_byte(std::uint64_t pos, std::uint64_t seed) {
    std::uint64_t x = (pos >> 3) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return static_cast<std::uint8_t>(x >> ((pos & 7) * 8));
}

inline void fill_pattern(void* dst, std::uint64_t pos, std::size_t len, std::uint64_t seed) {
    auto* p = static_cast<std::uint8_t*>(dst);
    for (std::size_t i = 0; i < len; ++i) p[i] = pattern_byte(pos + i, seed);
}

// The first position where `data` differs from the pattern, or -1.
inline std::int64_t pattern_mismatch(const void* data, std::uint64_t pos, std::size_t len,
                                     std::uint64_t seed) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    for (std::size_t i = 0; i < len; ++i) {
        if (p[i] != pattern_byte(pos + i, seed)) return static_cast<std::int64_t>(pos + i);
    }
    return -1;
}

// Writes `len` bytes of the pattern at aligned `pos` through write_at.
inline void write_pattern(dma_file& f, std::uint64_t pos, std::size_t len, std::uint64_t seed) {
    auto buf = f.allocate_buffer(len);
    fill_pattern(buf.data(), pos, len, seed);
    f.write_at(pos, buf);
}

template <typename F>
int expect_io_error(F&& f, std::string& message) {
    try {
        f();
    } catch (const io_error& e) {
        message = e.what();
        return e.error_number();
    }
    return 0;
}

}  // namespace percore::testing::file_patterns

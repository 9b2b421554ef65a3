// Helpers shared by the libFuzzer targets of fuzz/: invariant checks that
// abort with a message (libFuzzer then saves the input; the replay test
// fails), and the deterministic chunking that feeds a parser the way a
// connection does, a few bytes per read.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace percore::fuzz {

// Stops the run on a broken invariant. Not assert(): it must hold in
// release builds too, where the replay test may run.
[[noreturn]] inline void fail(const char* file, int line, const char* what) {
    std::fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
    std::fflush(stderr);
    std::abort();
}

#define FUZZ_CHECK(cond)                                               \
    do {                                                               \
        if (!(cond)) ::percore::fuzz::fail(__FILE__, __LINE__, #cond); \
    } while (0)

// True when `part` lies inside `whole` (an empty view anywhere counts).
inline bool within(std::string_view part, const char* begin, std::size_t size) noexcept {
    if (part.empty()) return true;
    return part.data() >= begin && part.data() + part.size() <= begin + size;
}

// Both feedings of one input (whole, and cut into reads) must give the same
// events; on a difference, prints the two side by side and fails.
inline void require_same_events(const std::vector<std::string>& whole,
                                const std::vector<std::string>& split) {
    if (whole == split) return;
    for (std::size_t i = 0; i < std::max(whole.size(), split.size()); ++i) {
        std::fprintf(stderr, "%zu whole: %s\n  split: %s\n", i,
                     i < whole.size() ? whole[i].c_str() : "-",
                     i < split.size() ? split[i].c_str() : "-");
    }
    fail(__FILE__, __LINE__, "split input parses differently");
}

// Read sizes derived from the input's own bytes (so the seed corpus holds
// plain protocol and every input still replays the same): mostly small
// reads, some of one byte, some large, like a TCP stream cut anywhere.
class chunker {
  public:
    explicit chunker(const std::uint8_t* data, std::size_t size) noexcept {
        std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the input
        for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
        state_ = h | 1;
    }
    // The next read's size (at least 1).
    std::size_t next() noexcept {
        const std::uint64_t r = random();
        switch (r % 4) {
            case 0:
                return 1;
            case 1:
                return 1 + (r >> 8) % 8;
            case 2:
                return 1 + (r >> 8) % 64;
            default:
                return 1 + (r >> 8) % 4096;
        }
    }
    // A random bit, for choices like which limits to use.
    bool flip() noexcept { return random() & 1; }

  private:
    std::uint64_t random() noexcept {  // xorshift64*
        state_ ^= state_ >> 12;
        state_ ^= state_ << 25;
        state_ ^= state_ >> 27;
        return state_ * 0x2545f4914f6cdd1dull;
    }
    std::uint64_t state_;
};

}  // namespace percore::fuzz

// A load generator protocol ("mode"): how to build request number `seq` of a
// connection and how to read and check its reply. Each mode lives in its own
// file (mode_echo.cpp; the kv app adds memcache and resp) and registers in
// make_mode().
#pragma once

#include <charconv>
#include <cstdint>
#include <memory>
#include <string>

#include "percore/stream.hpp"

namespace loadgen {

struct mode_options {
    std::size_t size = 64;        // payload bytes per request
    std::uint64_t keys = 100000;  // key space (kv modes)
    unsigned set_ratio = 1;       // kv modes: sets per (set_ratio + get_ratio) requests
    unsigned get_ratio = 9;
};

class mode {
  public:
    virtual ~mode() = default;
    // Appends request `seq` of connection `conn_id` to out.
    virtual void make_request(unsigned conn_id, std::uint64_t seq, std::string& out) = 0;
    // Reads the reply to request `seq`; false if any byte differs from what
    // was expected (or the peer closed mid-reply).
    virtual bool check_reply(unsigned conn_id, std::uint64_t seq, percore::input_stream& in) = 0;
};

// What the kv modes (memcache, resp) share: a SET:GET mix over --keys keys
// with --size-byte values. A key's value depends only on the key, and the
// key names the size, so every reply can be checked whichever connection
// stored it and runs with different --size never read each other's values.
class kv_workload {
  protected:
    explicit kv_workload(const mode_options& options)
        : size_(options.size),
          keys_(options.keys),
          sets_(options.set_ratio),
          period_(options.set_ratio + options.get_ratio) {}

    bool is_set(std::uint64_t seq) const noexcept { return seq % period_ < sets_; }

    std::uint64_t key_of(unsigned conn_id, std::uint64_t seq) const noexcept {
        // splitmix64 of (connection, sequence): keys spread evenly.
        std::uint64_t z = seq * 0x9e3779b97f4a7c15ull + conn_id * 0xbf58476d1ce4e5b9ull + 1;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return (z ^ (z >> 31)) % keys_;
    }

    static void append_number(std::string& out, std::uint64_t n) {
        char digits[24];
        out.append(digits, std::to_chars(digits, digits + sizeof digits, n).ptr);
    }
    void append_key(std::string& out, std::uint64_t key) const {
        out += "key";
        append_number(out, size_);
        out += ":";
        append_number(out, key);
    }
    void append_value(std::string& out, std::uint64_t key) const {
        const std::size_t at = out.size();
        out.resize(at + size_);
        auto base = static_cast<unsigned char>(key * 31);
        for (std::size_t i = 0; i < size_; ++i) out[at + i] = static_cast<char>('a' + (base + i) % 26);
    }

    std::size_t size_;
    std::uint64_t keys_;
    unsigned sets_;
    unsigned period_;
};

// The mode called `name`; throws percore::config_error for an unknown one.
std::unique_ptr<mode> make_mode(const std::string& name, const mode_options& options);

std::unique_ptr<mode> make_echo_mode(const mode_options& options);
std::unique_ptr<mode> make_memcache_mode(const mode_options& options);
std::unique_ptr<mode> make_resp_mode(const mode_options& options);

}  // namespace loadgen

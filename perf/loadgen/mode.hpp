// A load generator protocol ("mode"): how to build request number `seq` of a
// connection and how to read and check its reply. Each mode lives in its own
// file (mode_echo.cpp; the kv app adds memcache and resp) and registers in
// make_mode().
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "percore/stream.hpp"

namespace loadgen {

struct mode_options {
    std::size_t size = 64;        // payload bytes per request
    std::uint64_t keys = 100000;  // key space (kv modes)
    unsigned set_ratio = 1;       // kv modes: sets per (set_ratio + get_ratio) requests
    unsigned get_ratio = 9;
    double zipf_exponent = 0;  // kv modes: 0 uniform keys, > 0 zipf-distributed keys
};

// What a checked reply was: `wrong` is an error; kv GETs are hits or misses.
enum class reply_kind : std::uint8_t { wrong, ok, hit, miss };

class mode {
  public:
    virtual ~mode() = default;
    // Appends request `seq` of connection `conn_id` to out.
    virtual void make_request(unsigned conn_id, std::uint64_t seq, std::string& out) = 0;
    // Reads the reply to request `seq`; `wrong` if any byte differs from what
    // was expected (or the peer closed mid-reply).
    virtual reply_kind check_reply(unsigned conn_id, std::uint64_t seq,
                                   percore::input_stream& in) = 0;
};

// Zipf-distributed ranks 1..n (P(k) ~ 1/k^s) by rejection-inversion
// (Hörmann & Derflinger 1996): a few constants computed once, O(1) expected
// time per sample, no table and no allocation, any s > 0 and any n.
class zipf_sampler {
  public:
    zipf_sampler(std::uint64_t n, double s)
        : n_(static_cast<double>(n)),
          s_(s),
          h_x1_(h_integral(1.5) - 1.0),
          h_n_(h_integral(n_ + 0.5)),
          cut_(2.0 - h_integral_inverse(h_integral(2.5) - h(2.0))) {}

    // The rank for a stream of uniform 64-bit numbers (next() is called
    // until a sample is accepted: once in most cases).
    template <typename Next>
    std::uint64_t sample(Next&& next) const {
        for (;;) {
            const double uniform = static_cast<double>(next() >> 11) * 0x1.0p-53;
            const double u = h_n_ + uniform * (h_x1_ - h_n_);
            const double x = h_integral_inverse(u);
            double k = std::floor(x + 0.5);
            if (k < 1) k = 1;
            if (k > n_) k = n_;
            if (k - x <= cut_ || u >= h_integral(k + 0.5) - h(k))
                return static_cast<std::uint64_t>(k);
        }
    }

  private:
    double h(double x) const { return std::exp(-s_ * std::log(x)); }
    double h_integral(double x) const {
        const double log_x = std::log(x);
        return helper2((1.0 - s_) * log_x) * log_x;
    }
    double h_integral_inverse(double x) const {
        double t = x * (1.0 - s_);
        if (t < -1.0) t = -1.0;  // rounding near the end of the range
        return std::exp(helper1(t) * x);
    }
    // log1p(x)/x and expm1(x)/x, exact near 0.
    static double helper1(double x) {
        return std::abs(x) > 1e-8 ? std::log1p(x) / x
                                  : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
    }
    static double helper2(double x) {
        return std::abs(x) > 1e-8 ? std::expm1(x) / x
                                  : 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x));
    }

    double n_, s_, h_x1_, h_n_, cut_;
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
          period_(options.set_ratio + options.get_ratio),
          zipf_(options.keys, options.zipf_exponent > 0 ? options.zipf_exponent : 1.0),
          uniform_(!(options.zipf_exponent > 0)),
          letters_(size_ + 26, '\0') {
        for (std::size_t i = 0; i < letters_.size(); ++i)
            letters_[i] = static_cast<char>('a' + i % 26);
    }

    bool is_set(std::uint64_t seq) const noexcept { return seq % period_ < sets_; }

    // The key of request `seq` of a connection: a pure function of both, so
    // the reply can be checked without remembering what was sent.
    std::uint64_t key_of(unsigned conn_id, std::uint64_t seq) const noexcept {
        // splitmix64 seeded by (connection, sequence).
        std::uint64_t state = seq * 0x9e3779b97f4a7c15ull + conn_id * 0xbf58476d1ce4e5b9ull + 1;
        auto next = [&state] {
            std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            return z ^ (z >> 31);
        };
        if (uniform_) return next() % keys_;
        return zipf_.sample(next) - 1;  // rank 1 (the hottest) is key 0
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
    // Key `key`'s value: letters counting up (mod 26) from a start that
    // depends on the key. A window into one precomputed run, so making and
    // checking a 4 KiB value are a copy and a compare, not a byte loop.
    std::string_view value_of(std::uint64_t key) const noexcept {
        auto start = static_cast<unsigned char>(key * 31) % 26u;
        return std::string_view(letters_).substr(start, size_);
    }
    void append_value(std::string& out, std::uint64_t key) const { out += value_of(key); }
    // Whether `data` is key `key`'s value followed by CRLF.
    bool is_value_line(std::string_view data, std::uint64_t key) const noexcept {
        return data.size() == size_ + 2 && data.substr(0, size_) == value_of(key) &&
               data.substr(size_) == "\r\n";
    }

    std::size_t size_;
    std::uint64_t keys_;
    unsigned sets_;
    unsigned period_;
    zipf_sampler zipf_;
    bool uniform_;
    std::string letters_;  // byte i is 'a' + i mod 26, size_ + 26 long
};

// The mode called `name`; throws percore::config_error for an unknown one.
std::unique_ptr<mode> make_mode(const std::string& name, const mode_options& options);

std::unique_ptr<mode> make_echo_mode(const mode_options& options);
std::unique_ptr<mode> make_memcache_mode(const mode_options& options);
std::unique_ptr<mode> make_resp_mode(const mode_options& options);

}  // namespace loadgen

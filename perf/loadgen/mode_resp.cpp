// --mode resp: RESP2 (Redis) SET/GET mix (--ratio) over --keys keys with
// --size-byte values, as multibulk requests like redis-benchmark sends. A
// key's value depends only on the key, so every reply is checked whichever
// connection stored it: a SET must answer +OK, a GET either a null bulk (not
// stored yet) or exactly that key's value.
#include <charconv>
#include <cstring>

#include "mode.hpp"

namespace loadgen {
namespace {

class resp_mode final : public mode {
  public:
    explicit resp_mode(const mode_options& options)
        : size_(options.size),
          keys_(options.keys),
          sets_(options.set_ratio),
          period_(options.set_ratio + options.get_ratio) {}

    void make_request(unsigned conn_id, std::uint64_t seq, std::string& out) override {
        const std::uint64_t key = key_of(conn_id, seq);
        key_.clear();
        append_key(key_, key);
        if (is_set(seq)) {
            out += "*3\r\n$3\r\nSET\r\n";
            append_bulk_header(out, key_.size());
            out += key_;
            out += "\r\n";
            append_bulk_header(out, size_);
            append_value(out, key);
            out += "\r\n";
        } else {
            out += "*2\r\n$3\r\nGET\r\n";
            append_bulk_header(out, key_.size());
            out += key_;
            out += "\r\n";
        }
    }

    bool check_reply(unsigned conn_id, std::uint64_t seq, percore::input_stream& in) override {
        const std::uint64_t key = key_of(conn_id, seq);
        std::string_view line = in.read_until("\r\n", 1024);
        if (is_set(seq)) return line == "+OK\r\n";
        if (line == "$-1\r\n") return true;  // a miss: nobody stored it yet
        expected_.clear();
        append_bulk_header(expected_, size_);
        if (line != expected_) return false;
        std::string_view data = in.read_exactly(size_ + 2);
        expected_.clear();
        append_value(expected_, key);
        expected_ += "\r\n";
        return data == expected_;
    }

  private:
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
    static void append_bulk_header(std::string& out, std::size_t n) {
        out += '$';
        append_number(out, n);
        out += "\r\n";
    }
    // The value size is part of the key, so runs with different --size
    // against one server never read each other's values.
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
        for (std::size_t i = 0; i < size_; ++i)
            out[at + i] = static_cast<char>('a' + (base + i) % 26);
    }

    std::size_t size_;
    std::uint64_t keys_;
    unsigned sets_;
    unsigned period_;
    std::string key_;
    std::string expected_;
};

}  // namespace

std::unique_ptr<mode> make_resp_mode(const mode_options& options) {
    return std::make_unique<resp_mode>(options);
}

}  // namespace loadgen

// --mode memcache: memcached text protocol, a SET:GET mix (--ratio, like
// memtier's) over --keys keys with --size-byte values. A key's value depends
// only on the key (which names the size), so every reply is checked whichever connection stored it:
// a set must answer STORED, a get either END (not stored yet) or exactly
// that key's value.
#include <charconv>
#include <cstring>

#include "mode.hpp"

namespace loadgen {
namespace {

class memcache_mode final : public mode {
  public:
    explicit memcache_mode(const mode_options& options)
        : size_(options.size),
          keys_(options.keys),
          sets_(options.set_ratio),
          period_(options.set_ratio + options.get_ratio) {}

    void make_request(unsigned conn_id, std::uint64_t seq, std::string& out) override {
        const std::uint64_t key = key_of(conn_id, seq);
        if (is_set(seq)) {
            out += "set ";
            append_key(out, key);
            out += " 0 0 ";
            append_number(out, size_);
            out += "\r\n";
            append_value(out, key);
            out += "\r\n";
        } else {
            out += "get ";
            append_key(out, key);
            out += "\r\n";
        }
    }

    bool check_reply(unsigned conn_id, std::uint64_t seq, percore::input_stream& in) override {
        const std::uint64_t key = key_of(conn_id, seq);
        std::string_view line = in.read_until("\r\n", 1024);
        if (is_set(seq)) return line == "STORED\r\n";
        if (line == "END\r\n") return true;  // a miss: nobody stored it yet
        expected_.clear();
        expected_ += "VALUE ";
        append_key(expected_, key);
        expected_ += " 0 ";
        append_number(expected_, size_);
        expected_ += "\r\n";
        if (line != expected_) return false;
        std::string_view data = in.read_exactly(size_ + 2);
        expected_.clear();
        append_value(expected_, key);
        expected_ += "\r\n";
        if (data != expected_) return false;
        return in.read_until("\r\n", 16) == "END\r\n";
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
    std::string expected_;
};

}  // namespace

std::unique_ptr<mode> make_memcache_mode(const mode_options& options) {
    return std::make_unique<memcache_mode>(options);
}

}  // namespace loadgen

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

class memcache_mode final : public mode, private kv_workload {
  public:
    explicit memcache_mode(const mode_options& options) : kv_workload(options) {}

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

    reply_kind check_reply(unsigned conn_id, std::uint64_t seq,
                           percore::input_stream& in) override {
        const std::uint64_t key = key_of(conn_id, seq);
        std::string_view line = in.read_until("\r\n", 1024);
        if (is_set(seq)) return line == "STORED\r\n" ? reply_kind::ok : reply_kind::wrong;
        if (line == "END\r\n") return reply_kind::miss;  // nobody stored it yet
        expected_.clear();
        expected_ += "VALUE ";
        append_key(expected_, key);
        expected_ += " 0 ";
        append_number(expected_, size_);
        expected_ += "\r\n";
        if (line != expected_) return reply_kind::wrong;
        if (!is_value_line(in.read_exactly(size_ + 2), key)) return reply_kind::wrong;
        return in.read_until("\r\n", 16) == "END\r\n" ? reply_kind::hit : reply_kind::wrong;
    }

  private:
    std::string expected_;
};

}  // namespace

std::unique_ptr<mode> make_memcache_mode(const mode_options& options) {
    return std::make_unique<memcache_mode>(options);
}

}  // namespace loadgen

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

class resp_mode final : public mode, private kv_workload {
  public:
    explicit resp_mode(const mode_options& options) : kv_workload(options) {}

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

    reply_kind check_reply(unsigned conn_id, std::uint64_t seq,
                           percore::input_stream& in) override {
        const std::uint64_t key = key_of(conn_id, seq);
        std::string_view line = in.read_until("\r\n", 1024);
        if (is_set(seq)) return line == "+OK\r\n" ? reply_kind::ok : reply_kind::wrong;
        if (line == "$-1\r\n") return reply_kind::miss;  // nobody stored it yet
        expected_.clear();
        append_bulk_header(expected_, size_);
        if (line != expected_) return reply_kind::wrong;
        return is_value_line(in.read_exactly(size_ + 2), key) ? reply_kind::hit : reply_kind::wrong;
    }

  private:
    static void append_bulk_header(std::string& out, std::size_t n) {
        out += '$';
        append_number(out, n);
        out += "\r\n";
    }
    std::string key_;
    std::string expected_;
};

}  // namespace

std::unique_ptr<mode> make_resp_mode(const mode_options& options) {
    return std::make_unique<resp_mode>(options);
}

}  // namespace loadgen

// RESP2 request parsing for the kv app's Redis front end: multibulk
// (`*N\r\n$len\r\n...`) and inline (telnet-style) commands, incremental over a
// connection's input buffer, with Redis 7's limits and protocol-error wording.
// Arguments are views into the connection's buffer: a command of up to
// `inline_args` arguments costs no heap allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace percore::kv {

// One argument of a request, as a place in the request's bytes (offsets, not
// pointers, so the connection may move its buffer while a request is partial).
struct resp_arg_ref {
    std::size_t offset = 0;
    std::size_t length = 0;
};

// The arguments of one parsed request: views into the connection's buffer,
// valid until the buffer is changed or the parser parses again.
class resp_args {
  public:
    static constexpr std::size_t inline_args = 8;  // held without heap allocation

    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    std::string_view operator[](std::size_t i) const noexcept {
        const resp_arg_ref& r = ref(i);
        return {base_ + r.offset, r.length};
    }

  private:
    friend class resp_parser;

    const resp_arg_ref& ref(std::size_t i) const noexcept {
        return i < inline_args ? inline_[i] : spill_[i - inline_args];
    }
    void clear() noexcept {
        size_ = 0;
        spill_.clear();  // keeps its capacity: a connection allocates once
    }
    void push(resp_arg_ref r) {
        if (size_ < inline_args) {
            inline_[size_] = r;
        } else {
            spill_.push_back(r);
        }
        ++size_;
    }

    const char* base_ = nullptr;
    std::size_t size_ = 0;
    std::array<resp_arg_ref, inline_args> inline_{};
    std::vector<resp_arg_ref> spill_;
};

// Limits on what one request may be, as Redis has them.
struct resp_limits {
    std::size_t max_bulk_len = 512 * 1024 * 1024;  // --proto-max-bulk-len
    std::size_t max_multibulk_len = 2147483647;    // Redis 7: INT_MAX arguments
    std::size_t max_inline_len = 64 * 1024;        // PROTO_INLINE_MAX_SIZE
    std::size_t max_unauth_multibulk_len = 10;     // before AUTH succeeded
    std::size_t max_unauth_bulk_len = 16384;
};

// Incremental parser of one connection's requests. Feed it the unconsumed
// input, starting at the current request: after need_more the same bytes must
// come back (more may follow), so nothing is scanned twice.
class resp_parser {
  public:
    enum class status {
        need_more,  // the request is incomplete: read more and call again
        complete,   // args() holds it (possibly no arguments: skip it); consumed() bytes used
        error,      // protocol error: reply error() and close the connection
    };

    explicit resp_parser(resp_limits limits = {}) : limits_(limits) {}

    // Parses one request at the start of `input`. Inline requests are
    // unescaped in place, hence the mutable bytes.
    status parse(std::span<char> input);

    // After complete: the request's arguments and its size in bytes.
    const resp_args& args() const noexcept { return args_; }
    std::size_t consumed() const noexcept { return consumed_; }

    // After error: the error reply's text without '-' and CRLF, as Redis
    // words it ("ERR Protocol error: invalid bulk length").
    const std::string& error() const noexcept { return error_; }

    // How many input bytes the request needs at least before parse() can
    // progress; lets the connection size its buffer once for a big bulk.
    std::size_t bytes_wanted() const noexcept { return wanted_; }

    // Until authenticated, Redis refuses big requests (see resp_limits).
    void set_authenticated(bool yes) noexcept { authenticated_ = yes; }
    const resp_limits& limits() const noexcept { return limits_; }

  private:
    enum class state { start, multibulk, inline_line };

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    std::size_t header_end(std::span<char> input, bool& too_big);
    status parse_multibulk(std::span<char> input);
    status parse_inline(std::span<char> input);
    status fail(std::string message);
    status done(const char* base, std::size_t consumed);

    resp_limits limits_;
    bool authenticated_ = true;
    state state_ = state::start;
    std::size_t pos_ = 0;        // bytes of the current request already parsed
    std::size_t scan_ = 0;       // searched for the current line's end up to here
    bool have_count_ = false;    // multibulk: the "*N" line is parsed
    std::size_t args_left_ = 0;  // multibulk: arguments still to come
    std::int64_t bulk_len_ =
        -1;  // multibulk: length of the argument being read, -1 before its header
    std::size_t wanted_ = 1;
    std::size_t consumed_ = 0;
    resp_args args_;
    std::string error_;
};

// Parses a decimal integer exactly as Redis's string2ll does: optional '-',
// no '+', no leading zeros or spaces, no overflow. False if not valid.
bool parse_strict_int(std::string_view text, long long& value) noexcept;

}  // namespace percore::kv

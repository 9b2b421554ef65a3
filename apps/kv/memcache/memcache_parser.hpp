// Incremental parser of memcached's text protocol (protocol.txt of memcached
// 1.6). It parses one request at a time from the front of the connection's
// input buffer, in place: the request's fields are string_views into that
// buffer (valid until the caller discards the consumed bytes), so the common
// path allocates nothing. It keeps no partial state between calls except how
// many bytes of a refused value remain to be swallowed, so a request split
// at any byte boundary parses the same once its last byte arrived.
//
// Error replies are memcached's exact lines; like memcached, a request with
// `noreply` gets no error reply either (reply is then empty).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace percore::kv::memcache {

enum class command : std::uint8_t {
    get,
    gets,
    gat,
    gats,
    set,
    add,
    replace,
    append,
    prepend,
    cas,
    del,
    incr,
    decr,
    touch,
    flush_all,
    version,
    verbosity,
    stats,
    quit,
};

// True for set/add/replace/append/prepend/cas.
inline bool is_storage(command c) noexcept {
    return c >= command::set && c <= command::cas;
}
// True for get/gets/gat/gats.
inline bool is_retrieval(command c) noexcept {
    return c <= command::gats;
}

// One parsed request; views point into the parsed input.
struct request {
    command cmd = command::get;
    bool noreply = false;
    bool too_large = false;    // storage command whose value was refused (and swallowed)
    std::string_view key;      // single-key commands
    std::string_view keys;     // retrieval: the keys separated by spaces (see key_cursor)
    std::string_view data;     // storage: the value bytes (without the CRLF)
    std::string_view args;     // stats: the rest of the line
    std::uint32_t flags = 0;   // storage: client flags (low 32 bits of what was sent)
    std::int64_t exptime = 0;  // storage/touch/gat/flush_all: int32 like memcached (see to_expiry)
    std::uint64_t number = 0;  // cas: unique; incr/decr: delta; verbosity: level
};

// Walks the space-separated keys of a retrieval request without allocating.
class key_cursor {
  public:
    explicit key_cursor(std::string_view keys) noexcept : rest_(keys) {}
    // Stores the next key in `key`; false when none is left.
    bool next(std::string_view& key) noexcept;

  private:
    std::string_view rest_;
};

enum class parse_status : std::uint8_t {
    request,    // `out` holds a request; drop `consumed` bytes after using it
    need_more,  // the input holds no complete request yet
    error,      // a bad request: send `reply` (may be empty: noreply), drop `consumed`
    skip,       // swallowed `consumed` bytes of a refused value; nothing to send
    close,      // unrecoverable (line too long): send `reply`, then close
};

struct parse_result {
    parse_status status = parse_status::need_more;
    std::size_t consumed = 0;
    std::string_view reply;  // for error and close: full line(s) with CRLF
};

// Bounds that keep a connection's memory finite.
struct parser_limits {
    std::size_t max_key_size = 250;              // memcached's KEY_MAX_LENGTH
    std::size_t max_item_size = 1024 * 1024;     // like memcached -I (1m default)
    std::size_t max_line = 2048;                 // command line without data
    std::size_t max_retrieval_line = 64 * 1024;  // get/gets/gat/gats with many keys
};

// The reply lines the parser (and the executor) send.
namespace replies {
inline constexpr std::string_view error = "ERROR\r\n";
inline constexpr std::string_view bad_format = "CLIENT_ERROR bad command line format\r\n";
inline constexpr std::string_view bad_chunk = "CLIENT_ERROR bad data chunk\r\n";
inline constexpr std::string_view bad_delta = "CLIENT_ERROR invalid numeric delta argument\r\n";
inline constexpr std::string_view bad_exptime = "CLIENT_ERROR invalid exptime argument\r\n";
inline constexpr std::string_view bad_delete =
    "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
inline constexpr std::string_view line_too_long = "CLIENT_ERROR line too long\r\n";
inline constexpr std::string_view too_large = "SERVER_ERROR object too large for cache\r\n";
inline constexpr std::string_view no_memory = "SERVER_ERROR out of memory storing object\r\n";
inline constexpr std::string_view non_numeric =
    "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
inline constexpr std::string_view too_many_connections =
    "SERVER_ERROR too many open connections\r\n";
// A write refused because --data-dir's disk is full (the change cannot be logged).
inline constexpr std::string_view no_disk = "SERVER_ERROR out of disk\r\n";
}  // namespace replies

class parser {
  public:
    explicit parser(const parser_limits& limits = {}) noexcept : limits_(limits) {}

    // Parses the first request of `input`. See parse_status for what to do.
    parse_result parse(std::string_view input, request& out);

    // Bytes of a refused value still to be dropped (0 normally).
    std::size_t swallowing() const noexcept { return swallow_; }
    const parser_limits& limits() const noexcept { return limits_; }
    // The largest buffered input a valid request can need: a line plus a
    // value of max_item_size; a connection never has to buffer more.
    std::size_t max_request_size() const noexcept {
        return limits_.max_retrieval_line + limits_.max_item_size + 2;
    }

  private:
    parse_result parse_line(std::string_view input, std::string_view line, std::size_t line_size,
                            request& out);
    parse_result parse_storage(std::string_view input, std::size_t line_size,
                               std::string_view* tokens, std::size_t count, request& out);

    parser_limits limits_;
    std::size_t swallow_ = 0;
};

}  // namespace percore::kv::memcache

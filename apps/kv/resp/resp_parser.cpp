// RESP2 request parsing; mirrors Redis 7's processMultibulkBuffer and
// processInlineBuffer (networking.c) so that the same bytes get the same
// replies and the same protocol errors.
#include "resp/resp_parser.hpp"

#include <algorithm>
#include <climits>
#include <cstring>

namespace percore::kv {

namespace {

// The whitespace of C's isspace() in the "C" locale, as Redis's splitter uses it.
bool is_space(char c) noexcept {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

bool is_hex(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c - 'A' + 10;
}

// Finds `c` in data[from, size); returns size when absent.
std::size_t find_byte(const char* data, std::size_t from, std::size_t size, char c) noexcept {
    if (from >= size) return size;
    const void* p = std::memchr(data + from, c, size - from);
    return p ? static_cast<std::size_t>(static_cast<const char*>(p) - data) : size;
}

// find_byte() for '\r' in a header line ("*3", "$100"): those are a few
// bytes, which a plain loop checks before memchr's call would return.
std::size_t find_cr(const char* data, std::size_t from, std::size_t size) noexcept {
    const std::size_t near = std::min(size, from + 16);
    for (std::size_t i = from; i < near; ++i) {
        if (data[i] == '\r') return i;
    }
    return find_byte(data, near, size, '\r');
}

}  // namespace

bool parse_strict_int(std::string_view text, long long& value) noexcept {
    const std::size_t n = text.size();
    if (n == 0) return false;
    if (n == 1 && text[0] == '0') {
        value = 0;
        return true;
    }
    std::size_t i = 0;
    const bool negative = text[0] == '-';
    if (negative && ++i == n) return false;
    if (text[i] < '1' || text[i] > '9') return false;  // no leading zeros, '+' or spaces
    unsigned long long v = static_cast<unsigned long long>(text[i++] - '0');
    for (; i < n; ++i) {
        if (text[i] < '0' || text[i] > '9') return false;
        const unsigned digit = static_cast<unsigned>(text[i] - '0');
        if (v > ULLONG_MAX / 10) return false;
        v *= 10;
        if (v > ULLONG_MAX - digit) return false;
        v += digit;
    }
    if (negative) {
        if (v > static_cast<unsigned long long>(LLONG_MAX) + 1) return false;
        value = v == static_cast<unsigned long long>(LLONG_MAX) + 1 ? LLONG_MIN
                                                                    : -static_cast<long long>(v);
    } else {
        if (v > static_cast<unsigned long long>(LLONG_MAX)) return false;
        value = static_cast<long long>(v);
    }
    return true;
}

resp_parser::status resp_parser::parse(std::span<char> input) {
    if (state_ == state::start) {
        if (input.empty()) {
            wanted_ = 1;
            return status::need_more;
        }
        args_.clear();
        pos_ = 0;
        scan_ = 0;
        args_left_ = 0;
        bulk_len_ = -1;
        have_count_ = false;
        state_ = input[0] == '*' ? state::multibulk : state::inline_line;
    }
    return state_ == state::multibulk ? parse_multibulk(input) : parse_inline(input);
}

resp_parser::status resp_parser::fail(std::string message) {
    error_ = std::move(message);
    state_ = state::start;
    return status::error;
}

resp_parser::status resp_parser::done(const char* base, std::size_t consumed) {
    args_.base_ = base;
    consumed_ = consumed;
    wanted_ = 1;
    state_ = state::start;
    return status::complete;
}

// Finds the '\r' ending the header line that starts at pos_; npos when the
// line (and the '\n' after it) is not all there yet.
std::size_t resp_parser::header_end(std::span<char> input, bool& too_big) {
    const std::size_t size = input.size();
    const std::size_t cr = find_cr(input.data(), std::max(scan_, pos_), size);
    too_big = false;
    if (cr == size) {
        scan_ = size;
        too_big = size - pos_ > limits_.max_inline_len;
        wanted_ = size + 1;
        return npos;
    }
    scan_ = cr;
    // Found or not, a line past the limit is refused: the outcome must not
    // depend on how the bytes were split into reads.
    if (cr - pos_ > limits_.max_inline_len) {
        too_big = true;
        return npos;
    }
    if (cr + 2 > size) {  // the '\n' after '\r' is still to come (Redis does not check it is one)
        wanted_ = cr + 2;
        return npos;
    }
    return cr;
}

resp_parser::status resp_parser::parse_multibulk(std::span<char> input) {
    char* const data = input.data();
    bool too_big = false;
    if (!have_count_) {
        const std::size_t cr = header_end(input, too_big);
        if (too_big) return fail("ERR Protocol error: too big mbulk count string");
        if (cr == npos) return status::need_more;
        long long count = 0;
        if (!parse_strict_int({data + 1, cr - 1}, count) ||
            count > static_cast<long long>(limits_.max_multibulk_len)) {
            return fail("ERR Protocol error: invalid multibulk length");
        }
        if (!authenticated_ && count > static_cast<long long>(limits_.max_unauth_multibulk_len)) {
            return fail("ERR Protocol error: unauthenticated multibulk length");
        }
        pos_ = cr + 2;
        if (count <= 0) return done(data, pos_);  // "*0" and "*-1" are no command at all
        have_count_ = true;
        args_left_ = static_cast<std::size_t>(count);
    }
    while (args_left_ > 0) {
        if (bulk_len_ < 0) {
            const std::size_t cr = header_end(input, too_big);
            if (too_big) return fail("ERR Protocol error: too big bulk count string");
            if (cr == npos) return status::need_more;
            if (data[pos_] != '$') {
                return fail(std::string("ERR Protocol error: expected '$', got '") + data[pos_] +
                            "'");
            }
            long long len = 0;
            if (!parse_strict_int({data + pos_ + 1, cr - pos_ - 1}, len) || len < 0 ||
                static_cast<unsigned long long>(len) > limits_.max_bulk_len) {
                return fail("ERR Protocol error: invalid bulk length");
            }
            if (!authenticated_ && static_cast<std::size_t>(len) > limits_.max_unauth_bulk_len) {
                return fail("ERR Protocol error: unauthenticated bulk length");
            }
            pos_ = cr + 2;
            bulk_len_ = len;
        }
        const std::size_t len = static_cast<std::size_t>(bulk_len_);
        if (input.size() - pos_ < len + 2) {
            wanted_ = pos_ + len + 2;
            return status::need_more;
        }
        // Like Redis, the two bytes after the data are taken as its CRLF unchecked.
        args_.push({pos_, len});
        pos_ += len + 2;
        scan_ = pos_;
        bulk_len_ = -1;
        --args_left_;
    }
    return done(data, pos_);
}

resp_parser::status resp_parser::parse_inline(std::span<char> input) {
    char* const data = input.data();
    const std::size_t size = input.size();
    const std::size_t newline = find_byte(data, pos_, size, '\n');
    if (newline == size) {
        pos_ = size;
        if (size > limits_.max_inline_len)
            return fail("ERR Protocol error: too big inline request");
        wanted_ = size + 1;
        return status::need_more;
    }
    // As when the newline has not arrived yet (above): too long is too long
    // however the line was split into reads.
    if (newline > limits_.max_inline_len) return fail("ERR Protocol error: too big inline request");
    std::size_t end = newline;
    if (end > 0 && data[end - 1] == '\r') --end;
    // Redis splits the line as a C string: it ends at the first NUL byte.
    end = find_byte(data, 0, end, '\0');

    // Splits like Redis's sdssplitargs, unescaping in place: the write
    // position never passes the read position.
    std::size_t r = 0;
    std::size_t w = 0;
    for (;;) {
        while (r < end && is_space(data[r])) ++r;
        if (r >= end) break;
        const std::size_t start = w;
        bool in_double = false;
        bool in_single = false;
        bool token_done = false;
        while (!token_done) {
            if (in_double) {
                if (r >= end) return fail("ERR Protocol error: unbalanced quotes in request");
                if (data[r] == '\\' && r + 3 < end && data[r + 1] == 'x' && is_hex(data[r + 2]) &&
                    is_hex(data[r + 3])) {
                    data[w++] =
                        static_cast<char>(hex_value(data[r + 2]) * 16 + hex_value(data[r + 3]));
                    r += 3;
                } else if (data[r] == '\\' && r + 1 < end) {
                    ++r;
                    char c = data[r];
                    switch (c) {
                        case 'n':
                            c = '\n';
                            break;
                        case 'r':
                            c = '\r';
                            break;
                        case 't':
                            c = '\t';
                            break;
                        case 'b':
                            c = '\b';
                            break;
                        case 'a':
                            c = '\a';
                            break;
                        default:
                            break;
                    }
                    data[w++] = c;
                } else if (data[r] == '"') {
                    // A closing quote must be followed by a space or nothing at all.
                    if (r + 1 < end && !is_space(data[r + 1])) {
                        return fail("ERR Protocol error: unbalanced quotes in request");
                    }
                    token_done = true;
                } else {
                    data[w++] = data[r];
                }
                ++r;
            } else if (in_single) {
                if (r >= end) return fail("ERR Protocol error: unbalanced quotes in request");
                if (data[r] == '\\' && r + 1 < end && data[r + 1] == '\'') {
                    ++r;
                    data[w++] = '\'';
                } else if (data[r] == '\'') {
                    if (r + 1 < end && !is_space(data[r + 1])) {
                        return fail("ERR Protocol error: unbalanced quotes in request");
                    }
                    token_done = true;
                } else {
                    data[w++] = data[r];
                }
                ++r;
            } else {
                if (r >= end) break;
                switch (data[r]) {
                    case ' ':
                    case '\n':
                    case '\r':
                    case '\t':
                        token_done = true;
                        break;
                    case '"':
                        in_double = true;
                        break;
                    case '\'':
                        in_single = true;
                        break;
                    default:
                        data[w++] = data[r];
                        break;
                }
                ++r;
            }
        }
        args_.push({start, w - start});
    }
    return done(data, newline + 1);
}

}  // namespace percore::kv

#include "memcache/memcache_parser.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cstring>
#include <limits>

namespace percore::kv::memcache {

namespace {

// memcached parses numbers with strtoul/strtol: an optional sign, digits,
// nothing after (tokens hold no spaces). These mirror its safe_strto*.
bool parse_unsigned(std::string_view t, std::uint64_t& out) noexcept {
    if (!t.empty() && t[0] == '+') t.remove_prefix(1);
    if (t.empty() || t[0] < '0' || t[0] > '9') return false;
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
    return ec == std::errc() && p == t.data() + t.size();
}

bool parse_signed(std::string_view t, std::int64_t& out) noexcept {
    bool negative = false;
    if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
        negative = t[0] == '-';
        t.remove_prefix(1);
    }
    std::uint64_t magnitude;
    if (!parse_unsigned(t, magnitude) || (!t.empty() && t[0] == '+')) return false;
    if (negative) {
        if (magnitude > std::uint64_t{1} << 63) return false;
        out = static_cast<std::int64_t>(0 - magnitude);
    } else {
        if (magnitude > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            return false;
        out = static_cast<std::int64_t>(magnitude);
    }
    return true;
}

// memcached reads flags with strtoull and keeps the low 32 bits.
bool parse_flags(std::string_view t, std::uint32_t& out) noexcept {
    std::uint64_t v;
    if (!parse_unsigned(t, v)) return false;
    out = static_cast<std::uint32_t>(v);
    return true;
}

// memcached reads exptime with strtol into an int32: the low 32 bits count.
bool parse_exptime(std::string_view t, std::int64_t& out) noexcept {
    std::int64_t v;
    if (!parse_signed(t, v)) return false;
    out = static_cast<std::int32_t>(static_cast<std::uint32_t>(static_cast<std::uint64_t>(v)));
    return true;
}

struct command_name {
    std::string_view name;
    command cmd;
};
constexpr std::array<command_name, 19> command_names{{
    {"get", command::get},
    {"gets", command::gets},
    {"gat", command::gat},
    {"gats", command::gats},
    {"set", command::set},
    {"add", command::add},
    {"replace", command::replace},
    {"append", command::append},
    {"prepend", command::prepend},
    {"cas", command::cas},
    {"delete", command::del},
    {"incr", command::incr},
    {"decr", command::decr},
    {"touch", command::touch},
    {"flush_all", command::flush_all},
    {"version", command::version},
    {"verbosity", command::verbosity},
    {"stats", command::stats},
    {"quit", command::quit},
}};

bool lookup_command(std::string_view name, command& out) noexcept {
    for (const auto& c : command_names) {
        if (c.name == name) {
            out = c.cmd;
            return true;
        }
    }
    return false;
}

std::string_view skip_spaces(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && s[i] == ' ') ++i;
    return s.substr(i);
}

// True if the line (possibly incomplete) starts a retrieval command, whose
// lines may be longer (many keys).
bool starts_retrieval(std::string_view input) noexcept {
    const auto s = skip_spaces(input.substr(0, 64));
    return s.starts_with("get ") || s.starts_with("gets ") || s.starts_with("gat ") ||
           s.starts_with("gats ");
}

constexpr std::size_t max_tokens = 8;

}  // namespace

bool key_cursor::next(std::string_view& key) noexcept {
    rest_ = skip_spaces(rest_);
    if (rest_.empty()) return false;
    const auto end = std::min(rest_.find(' '), rest_.size());
    key = rest_.substr(0, end);
    rest_.remove_prefix(end);
    return true;
}

parse_result parser::parse(std::string_view input, request& out) {
    if (swallow_ > 0) {
        const std::size_t n = std::min(swallow_, input.size());
        if (n == 0) return {};
        swallow_ -= n;
        return {parse_status::skip, n, {}};
    }
    // The line must end within its limit; decided on the first `limit` bytes
    // only, so the outcome does not depend on how much has arrived.
    const std::size_t limit =
        starts_retrieval(input) ? limits_.max_retrieval_line : limits_.max_line;
    const std::size_t scan = std::min(input.size(), limit);
    const void* nl = std::memchr(input.data(), '\n', scan);
    if (!nl) {
        if (input.size() >= limit)
            return {parse_status::close, input.size(), replies::line_too_long};
        return {};
    }
    const std::size_t line_size = static_cast<const char*>(nl) - input.data() + 1;
    std::string_view line = input.substr(0, line_size - 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out = request{};
    return parse_line(input, line, line_size, out);
}

parse_result parser::parse_line(std::string_view input, std::string_view line,
                                std::size_t line_size, request& out) {
    const parse_result error{parse_status::error, line_size, replies::error};
    auto fail = [&](std::string_view reply) {
        return parse_result{parse_status::error, line_size,
                            out.noreply ? std::string_view{} : reply};
    };
    std::string_view rest = skip_spaces(line);
    std::string_view first = rest.substr(0, std::min(rest.find(' '), rest.size()));
    rest.remove_prefix(first.size());
    if (!lookup_command(first, out.cmd)) return error;

    if (is_retrieval(out.cmd)) {
        if (out.cmd == command::gat || out.cmd == command::gats) {
            rest = skip_spaces(rest);
            const auto exp = rest.substr(0, std::min(rest.find(' '), rest.size()));
            rest.remove_prefix(exp.size());
            if (exp.empty()) return error;
            if (!parse_exptime(exp, out.exptime)) return fail(replies::bad_exptime);
        }
        out.keys = skip_spaces(rest);
        key_cursor keys(out.keys);
        std::string_view key;
        std::size_t count = 0;
        while (keys.next(key)) {
            if (key.size() > limits_.max_key_size) return fail(replies::bad_format);
            ++count;
        }
        // memcached answers a gat without keys with END; get without keys is an ERROR.
        if (count == 0 && (out.cmd == command::get || out.cmd == command::gets)) return error;
        return {parse_status::request, line_size, {}};
    }
    if (out.cmd == command::stats) {
        out.args = skip_spaces(rest);
        return {parse_status::request, line_size, {}};
    }
    if (out.cmd == command::version || out.cmd == command::quit) {
        return {parse_status::request, line_size, {}};
    }

    // Split the arguments; more than any command takes means a bad count.
    std::array<std::string_view, max_tokens + 1> tokens;
    std::size_t count = 0;
    key_cursor split(rest);
    std::string_view token;
    while (count <= max_tokens && split.next(token)) tokens[count++] = token;
    if (count > max_tokens) return error;
    out.noreply = count > 0 && tokens[count - 1] == "noreply";

    switch (out.cmd) {
        case command::set:
        case command::add:
        case command::replace:
        case command::append:
        case command::prepend:
        case command::cas:
            return parse_storage(input, line_size, tokens.data(), count, out);
        case command::del: {
            if (count < 1 || count > 3) return error;
            out.key = tokens[0];
            if (out.key.size() > limits_.max_key_size) return fail(replies::bad_format);
            if (count > 1) {
                const bool hold_is_zero = tokens[1] == "0";
                const bool valid = (count == 2 && (hold_is_zero || out.noreply)) ||
                                   (count == 3 && hold_is_zero && out.noreply);
                if (!valid) return fail(replies::bad_delete);
            }
            return {parse_status::request, line_size, {}};
        }
        case command::incr:
        case command::decr:
            if (count != 2 && count != 3) return error;
            out.key = tokens[0];
            if (out.key.size() > limits_.max_key_size) return fail(replies::bad_format);
            if (!parse_unsigned(tokens[1], out.number)) return fail(replies::bad_delta);
            return {parse_status::request, line_size, {}};
        case command::touch:
            if (count != 2 && count != 3) return error;
            out.key = tokens[0];
            if (out.key.size() > limits_.max_key_size) return fail(replies::bad_format);
            if (!parse_exptime(tokens[1], out.exptime)) return fail(replies::bad_exptime);
            return {parse_status::request, line_size, {}};
        case command::flush_all: {
            if (count > 2) return error;
            const std::size_t args = count - (out.noreply ? 1 : 0);
            if (args > 0 && !parse_exptime(tokens[0], out.exptime))
                return fail(replies::bad_exptime);
            return {parse_status::request, line_size, {}};
        }
        case command::verbosity: {
            if (count != 1 && count != 2) return error;
            std::uint32_t level;
            if (!parse_flags(tokens[0], level)) return fail(replies::bad_format);
            out.number = level;
            return {parse_status::request, line_size, {}};
        }
        default:
            return error;
    }
}

parse_result parser::parse_storage(std::string_view input, std::size_t line_size,
                                   std::string_view* tokens, std::size_t count, request& out) {
    const bool is_cas = out.cmd == command::cas;
    const std::size_t want = is_cas ? 5 : 4;
    if (count != want && count != want + 1) return {parse_status::error, line_size, replies::error};
    // A 5th (6th for cas) token other than noreply is ignored, as memcached does.
    if (count == want) out.noreply = false;
    auto fail = [&](std::string_view reply) {
        return parse_result{parse_status::error, line_size,
                            out.noreply ? std::string_view{} : reply};
    };
    out.key = tokens[0];
    if (out.key.size() > limits_.max_key_size) return fail(replies::bad_format);
    std::int64_t length;
    if (!parse_flags(tokens[1], out.flags) || !parse_exptime(tokens[2], out.exptime) ||
        !parse_signed(tokens[3], length)) {
        return fail(replies::bad_format);
    }
    if (is_cas && !parse_unsigned(tokens[4], out.number)) return fail(replies::bad_format);
    if (length < 0 || length > INT_MAX - 2) return fail(replies::bad_format);
    const auto value_size = static_cast<std::size_t>(length);
    // memcached counts its item header (~56 bytes) and the key in the limit.
    constexpr std::size_t item_overhead = 59;
    if (value_size + out.key.size() + item_overhead > limits_.max_item_size) {
        // Refuse and drop the data block (value + CRLF) as it arrives.
        out.too_large = true;
        const std::size_t total = line_size + value_size + 2;
        const std::size_t now = std::min(total, input.size());
        swallow_ = total - now;
        return {parse_status::request, now, {}};
    }
    const std::size_t total = line_size + value_size + 2;
    if (input.size() < total) return {};
    out.data = input.substr(line_size, value_size);
    if (input[line_size + value_size] != '\r' || input[line_size + value_size + 1] != '\n') {
        out.data = {};
        return {parse_status::error, total, out.noreply ? std::string_view{} : replies::bad_chunk};
    }
    return {parse_status::request, total, {}};
}

}  // namespace percore::kv::memcache

// The single-key Redis commands, with Redis 7.0's argument rules and error
// wording (t_string.c, expire.c), and INCRBYFLOAT's float text.
#include "resp/resp_commands.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "resp/resp_parser.hpp"
#include "resp/resp_writer.hpp"

namespace percore::kv {

namespace {

using C = resp_cmd;

// Unix time in milliseconds now.
long long unix_ms_now() noexcept {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// A Redis absolute expiry (unix ms) as a point on the store's clock. Beyond
// what the clock can hold it saturates just short of no_expiry.
time_point expiry_at(long long unix_ms, const store& st) {
    const time_point now = st.config().now();
    const long long delta_ms = unix_ms - unix_ms_now();  // both within +-2^62: no overflow
    const auto headroom = std::chrono::duration_cast<std::chrono::milliseconds>(no_expiry - now);
    if (delta_ms >= headroom.count()) return no_expiry - duration(1);
    return now + std::chrono::duration_cast<duration>(std::chrono::milliseconds(delta_ms));
}

// A stored expiry as Redis's unix ms (-1 when none).
long long expiry_unix_ms(time_point expiry, const store& st) {
    if (expiry == no_expiry) return -1;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(expiry - st.config().now());
    return unix_ms_now() + left.count();
}

void invalid_expire(resp_writer& w, std::string_view command) {
    w.error("ERR invalid expire time in '" + std::string(command) + "' command");
}

// Redis's getExpireMillisecondsOrReply: the argument as an absolute unix ms;
// false after replying the error.
bool parse_set_expiry(std::string_view arg, bool seconds, bool relative, std::string_view command,
                      resp_writer& w, long long& unix_ms) {
    long long v = 0;
    if (!parse_strict_int(arg, v)) {
        w.error(resp_errors::not_integer);
        return false;
    }
    if (v <= 0 || (seconds && v > LLONG_MAX / 1000)) {
        invalid_expire(w, command);
        return false;
    }
    if (seconds) v *= 1000;
    if (relative) {
        const long long now = unix_ms_now();
        if (v > LLONG_MAX - now) {
            invalid_expire(w, command);
            return false;
        }
        v += now;
    }
    unix_ms = v;
    return true;
}

// Keyed commands and steps that change the store (refused when the log's disk is full).
bool resp_command_writes(resp_cmd cmd) noexcept {
    switch (cmd) {
        case C::get:
        case C::strlen:
        case C::getrange:
        case C::ttl:
        case C::pttl:
        case C::type:
        case C::step_mget:
        case C::step_exists:
            return false;
        default:
            return true;
    }
}

void reply_store_failure(resp_writer& w, store_result r) {
    if (r == store_result::no_disk) {
        w.error(resp_errors::no_disk);
    } else if (r == store_result::too_large) {
        w.error("ERR string exceeds maximum allowed size for this shard's memory");
    } else {
        w.error(resp_errors::out_of_memory);
    }
}

// The options of SET and GETEX (Redis's parseExtendedStringArgumentsOrReply).
struct string_options {
    bool nx = false, xx = false, get = false, keepttl = false, persist = false;
    int unit = 0;  // 0 none, 1 EX, 2 PX, 3 EXAT, 4 PXAT
    std::string_view expire;
};

bool parse_string_options(std::span<const std::string_view> argv, std::size_t from, bool is_set,
                          string_options& o, resp_writer& w) {
    for (std::size_t j = from; j < argv.size(); ++j) {
        const std::string_view opt = argv[j];
        const bool has_next = j + 1 < argv.size();
        const bool any_expire = o.unit != 0;
        if (is_set && iequals(opt, "nx") && !o.xx) {
            o.nx = true;
        } else if (is_set && iequals(opt, "xx") && !o.nx) {
            o.xx = true;
        } else if (is_set && iequals(opt, "get")) {
            o.get = true;
        } else if (is_set && iequals(opt, "keepttl") && !o.persist && !any_expire) {
            o.keepttl = true;
        } else if (!is_set && iequals(opt, "persist") && !any_expire && !o.keepttl) {
            o.persist = true;
        } else {
            int unit = 0;
            if (iequals(opt, "ex"))
                unit = 1;
            else if (iequals(opt, "px"))
                unit = 2;
            else if (iequals(opt, "exat"))
                unit = 3;
            else if (iequals(opt, "pxat"))
                unit = 4;
            // The same unit may repeat (the last wins), as in Redis.
            if (unit == 0 || o.keepttl || o.persist || (any_expire && o.unit != unit) ||
                !has_next) {
                w.error(resp_errors::syntax);
                return false;
            }
            o.unit = unit;
            o.expire = argv[++j];
        }
    }
    return true;
}

bool parse_expire_unit(const string_options& o, std::string_view command, resp_writer& w,
                       long long& unix_ms) {
    if (o.unit == 0) return true;
    return parse_set_expiry(o.expire, o.unit == 1 || o.unit == 3, o.unit <= 2, command, w, unix_ms);
}

void cmd_set(std::span<const std::string_view> argv, store& st, resp_writer& w) {
    string_options o;
    if (!parse_string_options(argv, 3, true, o, w)) return;
    long long unix_ms = 0;
    if (!parse_expire_unit(o, "set", w, unix_ms)) return;
    const std::string_view key = argv[1];
    std::string& out = w.buffer();
    const std::size_t mark = out.size();
    bool found;
    if (o.get) {
        auto old = st.get(key);
        found = old.has_value();
        if (old) {
            w.bulk(old->value);
        } else {
            w.null_bulk();
        }
    } else {
        found = (o.nx || o.xx) && st.peek(key).has_value();
    }
    if ((o.nx && found) || (o.xx && !found)) {
        if (!o.get) w.null_bulk();
        return;
    }
    set_options so;
    so.keep_ttl = o.keepttl;
    if (o.unit != 0) so.expiry = expiry_at(unix_ms, st);
    const store_result r = st.set(key, argv[2], so);
    if (r != store_result::stored) {
        out.resize(mark);
        reply_store_failure(w, r);
        return;
    }
    if (!o.get) w.ok();
}

void cmd_getex(std::span<const std::string_view> argv, store& st, resp_writer& w) {
    string_options o;
    if (!parse_string_options(argv, 2, false, o, w)) return;
    long long unix_ms = 0;
    if (!parse_expire_unit(o, "getex", w, unix_ms)) return;
    const std::string_view key = argv[1];
    if (o.unit == 0 && !o.persist) {
        auto v = st.get(key);
        v ? w.bulk(v->value) : w.null_bulk();
        return;
    }
    const time_point expiry = o.persist ? no_expiry : expiry_at(unix_ms, st);
    auto v = st.get_and_touch(key, expiry);
    v ? w.bulk(v->value) : w.null_bulk();
    if (v && expiry <= st.config().now()) st.remove(key);  // Redis deletes at once
}

void cmd_setex(std::span<const std::string_view> argv, bool seconds, store& st, resp_writer& w) {
    long long unix_ms = 0;
    if (!parse_set_expiry(argv[2], seconds, true, seconds ? "setex" : "psetex", w, unix_ms)) return;
    set_options so;
    so.expiry = expiry_at(unix_ms, st);
    const store_result r = st.set(argv[1], argv[3], so);
    r == store_result::stored ? w.ok() : reply_store_failure(w, r);
}

void cmd_incr(std::span<const std::string_view> argv, resp_cmd cmd, store& st, resp_writer& w) {
    long long delta = 1;
    if (cmd == resp_cmd::incrby || cmd == resp_cmd::decrby) {
        if (!parse_strict_int(argv[2], delta)) {
            w.error(resp_errors::not_integer);
            return;
        }
    }
    if (cmd == resp_cmd::decr || cmd == resp_cmd::decrby) {
        if (delta == LLONG_MIN) {
            w.error("ERR decrement would overflow");
            return;
        }
        delta = -delta;
    }
    const incr_by_result r = st.incr_by(argv[1], delta);
    switch (r.status) {
        case store_result::stored:
            w.integer(r.value);
            break;
        case store_result::non_numeric:
            w.error(resp_errors::not_integer);
            break;
        case store_result::out_of_range:
            w.error("ERR increment or decrement would overflow");
            break;
        default:
            reply_store_failure(w, r.status);
            break;
    }
}

void cmd_incrbyfloat(std::span<const std::string_view> argv, store& st, resp_writer& w) {
    long double value = 0;
    long double incr = 0;
    set_options so;
    so.keep_ttl = true;
    if (auto v = st.peek(argv[1])) {
        if (!parse_resp_float(v->value, value)) {
            w.error("ERR value is not a valid float");
            return;
        }
        so.flags = v->flags;
    }
    if (!parse_resp_float(argv[2], incr)) {
        w.error("ERR value is not a valid float");
        return;
    }
    value += incr;
    if (std::isnan(value) || std::isinf(value)) {
        w.error("ERR increment would produce NaN or Infinity");
        return;
    }
    const std::string text = format_resp_float(value);
    const store_result r = st.set(argv[1], text, so);
    r == store_result::stored ? w.bulk(text) : reply_store_failure(w, r);
}

bool check_string_length(std::size_t total, const resp_settings& s, resp_writer& w) {
    if (total > s.proto_max_bulk_len) {
        w.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        return false;
    }
    return true;
}

void cmd_append(std::span<const std::string_view> argv, store& st, const resp_settings& s,
                resp_writer& w) {
    std::size_t total = argv[2].size();
    set_options so;
    if (auto v = st.peek(argv[1])) {
        total += v->value.size();
        if (!check_string_length(total, s, w)) return;
        so.mode = set_mode::append;
    }
    const store_result r = st.set(argv[1], argv[2], so);
    r == store_result::stored ? w.integer(static_cast<long long>(total))
                              : reply_store_failure(w, r);
}

void cmd_getrange(std::span<const std::string_view> argv, store& st, resp_writer& w) {
    long long start = 0, end = 0;
    if (!parse_strict_int(argv[2], start) || !parse_strict_int(argv[3], end)) {
        w.error(resp_errors::not_integer);
        return;
    }
    auto v = st.get(argv[1]);
    if (!v) {
        w.bulk("");
        return;
    }
    const long long len = static_cast<long long>(v->value.size());
    if (start < 0 && end < 0 && start > end) {
        w.bulk("");
        return;
    }
    if (start < 0) start = len + start;
    if (end < 0) end = len + end;
    if (start < 0) start = 0;
    if (end < 0) end = 0;
    if (end >= len) end = len - 1;
    if (start > end || len == 0) {
        w.bulk("");
        return;
    }
    w.bulk(v->value.substr(static_cast<std::size_t>(start),
                           static_cast<std::size_t>(end - start + 1)));
}

void cmd_setrange(std::span<const std::string_view> argv, store& st, const resp_settings& s,
                  resp_writer& w) {
    long long offset = 0;
    if (!parse_strict_int(argv[2], offset)) {
        w.error(resp_errors::not_integer);
        return;
    }
    if (offset < 0) {
        w.error("ERR offset is out of range");
        return;
    }
    const std::string_view piece = argv[3];
    auto v = st.peek(argv[1]);
    const std::size_t old_len = v ? v->value.size() : 0;
    if (piece.empty()) {
        w.integer(static_cast<long long>(old_len));
        return;
    }
    const auto off = static_cast<unsigned long long>(offset);
    // Checked apart first so that the sum cannot overflow.
    if (!check_string_length(std::min<unsigned long long>(off, s.proto_max_bulk_len + 1ull), s,
                             w) ||
        !check_string_length(off + piece.size(), s, w)) {
        return;
    }
    std::string value(v ? v->value : std::string_view{});
    set_options so;
    if (v) {
        so.flags = v->flags;
        so.keep_ttl = true;
    }
    if (value.size() < off + piece.size()) value.resize(off + piece.size(), '\0');
    std::memcpy(value.data() + off, piece.data(), piece.size());
    const store_result r = st.set(argv[1], value, so);
    r == store_result::stored ? w.integer(static_cast<long long>(value.size()))
                              : reply_store_failure(w, r);
}

void cmd_expire(std::span<const std::string_view> argv, resp_cmd cmd, store& st, resp_writer& w) {
    bool nx = false, xx = false, gt = false, lt = false;
    for (std::size_t j = 3; j < argv.size(); ++j) {
        if (iequals(argv[j], "nx"))
            nx = true;
        else if (iequals(argv[j], "xx"))
            xx = true;
        else if (iequals(argv[j], "gt"))
            gt = true;
        else if (iequals(argv[j], "lt"))
            lt = true;
        else {
            w.error("ERR Unsupported option " + std::string(argv[j]));
            return;
        }
    }
    if (nx && (xx || gt || lt)) {
        w.error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if (gt && lt) {
        w.error("ERR GT and LT options at the same time are not compatible");
        return;
    }
    const bool seconds = cmd == resp_cmd::expire || cmd == resp_cmd::expireat;
    const bool relative = cmd == resp_cmd::expire || cmd == resp_cmd::pexpire;
    const std::string_view name = cmd == resp_cmd::expire     ? "expire"
                                  : cmd == resp_cmd::pexpire  ? "pexpire"
                                  : cmd == resp_cmd::expireat ? "expireat"
                                                              : "pexpireat";
    long long when = 0;
    if (!parse_strict_int(argv[2], when)) {
        w.error(resp_errors::not_integer);
        return;
    }
    if (seconds) {
        if (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000) return invalid_expire(w, name);
        when *= 1000;
    }
    if (relative) {
        const long long base = unix_ms_now();
        if (when > LLONG_MAX - base) return invalid_expire(w, name);
        when += base;
    }
    auto v = st.peek(argv[1]);
    if (!v) {
        w.integer(0);
        return;
    }
    const long long current = expiry_unix_ms(v->expiry, st);
    if ((nx && current != -1) || (xx && current == -1) ||
        (gt && (when <= current || current == -1)) || (lt && current != -1 && when >= current)) {
        w.integer(0);
        return;
    }
    if (when <= unix_ms_now()) {
        st.remove(argv[1]);
    } else {
        st.touch(argv[1], expiry_at(when, st));
    }
    w.integer(1);
}

void cmd_ttl(std::span<const std::string_view> argv, bool millis, store& st, resp_writer& w) {
    auto v = st.peek(argv[1]);
    if (!v) return w.integer(-2);
    if (v->expiry == no_expiry) return w.integer(-1);
    long long left =
        std::chrono::duration_cast<std::chrono::milliseconds>(v->expiry - st.config().now())
            .count();
    if (left < 0) left = 0;
    w.integer(millis ? left : (left + 500) / 1000);
}

}  // namespace

void execute_keyed(resp_cmd cmd, std::span<const std::string_view> argv, store& st,
                   const resp_settings& settings, std::string& out) {
    resp_writer w(out);
    // GETEX without options only reads (and logs nothing); with EX/PX/EXAT/
    // PXAT/PERSIST it changes the key's expiry.
    const bool writes = resp_command_writes(cmd) && !(cmd == C::getex && argv.size() == 2);
    if (writes && !st.accepting_writes()) {
        // The disk of --data-dir is full: reads go on, writes are refused
        // (a step_del's error replaces the whole DEL's count: see assemble()).
        return w.error(resp_errors::no_disk);
    }
    switch (cmd) {
        case C::get: {
            auto v = st.get(argv[1]);
            return v ? w.bulk(v->value) : w.null_bulk();
        }
        case C::set:
            return cmd_set(argv, st, w);
        case C::getdel: {
            auto v = st.get(argv[1]);
            if (!v) return w.null_bulk();
            w.bulk(v->value);
            st.remove(argv[1]);
            return;
        }
        case C::getex:
            return cmd_getex(argv, st, w);
        case C::setnx: {
            set_options so;
            so.mode = set_mode::add;
            const store_result r = st.set(argv[1], argv[2], so);
            if (r == store_result::stored || r == store_result::not_stored) {
                return w.integer(r == store_result::stored ? 1 : 0);
            }
            return reply_store_failure(w, r);
        }
        case C::setex:
            return cmd_setex(argv, true, st, w);
        case C::psetex:
            return cmd_setex(argv, false, st, w);
        case C::incr:
        case C::decr:
        case C::incrby:
        case C::decrby:
            return cmd_incr(argv, cmd, st, w);
        case C::incrbyfloat:
            return cmd_incrbyfloat(argv, st, w);
        case C::append:
            return cmd_append(argv, st, settings, w);
        case C::strlen: {
            auto v = st.peek(argv[1]);
            return w.integer(v ? static_cast<long long>(v->value.size()) : 0);
        }
        case C::getrange:
            return cmd_getrange(argv, st, w);
        case C::setrange:
            return cmd_setrange(argv, st, settings, w);
        case C::expire:
        case C::pexpire:
        case C::expireat:
        case C::pexpireat:
            return cmd_expire(argv, cmd, st, w);
        case C::ttl:
            return cmd_ttl(argv, false, st, w);
        case C::pttl:
            return cmd_ttl(argv, true, st, w);
        case C::persist: {
            auto v = st.peek(argv[1]);
            if (!v || v->expiry == no_expiry) return w.integer(0);
            st.touch(argv[1], no_expiry);
            return w.integer(1);
        }
        case C::type:
            return w.simple(st.peek(argv[1]) ? "string" : "none");
        // Steps of multi-key commands: argv is key [value].
        case C::step_mget: {
            auto v = st.get(argv[0]);
            return v ? w.bulk(v->value) : w.null_bulk();
        }
        case C::step_mset: {
            const store_result r = st.set(argv[0], argv[1]);
            if (r != store_result::stored) reply_store_failure(w, r);
            return;  // success leaves no bytes: the caller replies +OK once
        }
        case C::step_del: {
            const store_result r = st.remove(argv[0]);
            if (r == store_result::no_disk) return w.error(resp_errors::no_disk);
            out.push_back(r == store_result::deleted ? '1' : '0');
            return;
        }
        case C::step_exists:
            out.push_back(st.peek(argv[0]) ? '1' : '0');
            return;
        default:
            w.error("ERR internal: command is not keyed");
            return;
    }
}

std::string format_resp_float(long double value) {
    char buf[5 * 1024];
    int n = std::snprintf(buf, sizeof buf, "%.17Lf", value);
    if (n < 0 || static_cast<std::size_t>(n) >= sizeof buf)
        n = std::snprintf(buf, sizeof buf, "%.17Lg", value);
    std::size_t len = static_cast<std::size_t>(n);
    if (std::memchr(buf, '.', len)) {
        while (len > 0 && buf[len - 1] == '0') --len;
        if (len > 0 && buf[len - 1] == '.') --len;
    }
    if (len == 2 && buf[0] == '-' && buf[1] == '0') return "0";
    return std::string(buf, len);
}

bool parse_resp_float(std::string_view text, long double& value) noexcept {
    char buf[5 * 1024];
    if (text.empty() || text.size() >= sizeof buf) return false;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    errno = 0;
    char* end = nullptr;
    const long double v = std::strtold(buf, &end);
    const char first = buf[0];
    if (first == ' ' || first == '\t' || first == '\n' || first == '\v' || first == '\f' ||
        first == '\r')
        return false;
    if (*end != '\0' || std::isnan(v)) return false;
    if (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || v == 0)) return false;
    value = v;
    return true;
}

}  // namespace percore::kv

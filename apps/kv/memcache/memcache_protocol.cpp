#include "memcache/memcache_protocol.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>

#include "client_log.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"

namespace percore::kv::memcache {

namespace {

// memcached's reply when a get's values do not fit its output buffer.
constexpr std::string_view output_overflow_reply =
    "SERVER_ERROR out of memory writing get response\r\n";

constexpr std::int64_t max_relative_exptime = 60 * 60 * 24 * 30;  // memcached's REALTIME_MAXDELTA

void append_number(std::string& out, std::uint64_t n) {
    char digits[24];
    auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
    out.append(digits, end);
}

void append_value(std::string& out, const item_view& v, bool with_cas) {
    out.append("VALUE ");
    out.append(v.key);
    out.push_back(' ');
    append_number(out, v.flags);
    out.push_back(' ');
    append_number(out, v.value.size());
    if (with_cas) {
        out.push_back(' ');
        append_number(out, v.cas);
    }
    out.append("\r\n");
    out.append(v.value);
    out.append("\r\n");
}

std::string_view storage_reply(store_result r) {
    switch (r) {
        case store_result::stored:
            return "STORED\r\n";
        case store_result::not_stored:
            return "NOT_STORED\r\n";
        case store_result::exists:
            return "EXISTS\r\n";
        case store_result::not_found:
            return "NOT_FOUND\r\n";
        case store_result::no_memory:
            return replies::no_memory;
        case store_result::too_large:
            return replies::too_large;
        default:
            return "SERVER_ERROR unexpected store result\r\n";
    }
}

set_mode mode_of(command c) {
    switch (c) {
        case command::add:
            return set_mode::add;
        case command::replace:
            return set_mode::replace;
        case command::append:
            return set_mode::append;
        case command::prepend:
            return set_mode::prepend;
        case command::cas:
            return set_mode::cas;
        default:
            return set_mode::set;
    }
}

void stat(std::string& out, std::string_view name, std::uint64_t value) {
    out.append("STAT ");
    out.append(name);
    out.push_back(' ');
    append_number(out, value);
    out.append("\r\n");
}

void stat(std::string& out, std::string_view name, std::string_view value) {
    out.append("STAT ");
    out.append(name);
    out.push_back(' ');
    out.append(value);
    out.append("\r\n");
}

}  // namespace

time_point to_expiry(std::int64_t exptime, time_point now) noexcept {
    if (exptime == 0) return no_expiry;
    if (exptime < 0) return time_point::min();
    if (exptime > max_relative_exptime) {
        if (exptime <= db_shard::started_unix()) return time_point::min();
        return from_unix_seconds(exptime);
    }
    return now + std::chrono::seconds(exptime);
}

session::session(db& database, const parser_limits& limits)
    : db_(database),
      max_output_(database.local().config().max_output_buffer / shard_count()),
      parser_(limits),
      forwarder_(database),
      // A batch holds at most max_batch requests (each adds an op).
      touch_refused_(max_batch) {}

void session::add_keyed(std::uint32_t request, std::string_view key) {
    const auto tag = static_cast<std::uint32_t>(ops_.size());
    ops_.push_back(op{op_kind::keyed, request, key, {}});
    forwarder_.add(owner_shard(key, forwarder_.shards()), tag);
}

void session::add_literal(std::string_view text, std::uint32_t request) {
    const auto tag = static_cast<std::uint32_t>(ops_.size());
    ops_.push_back(op{op_kind::literal, request, {}, text});
    forwarder_.add(forwarder_.local_shard(), tag);
}

void session::run_batch(std::string& out) {
    executor exec{this};
    const std::size_t mark = out.size();
    reply_ends_.clear();
    // Only a gat/gats can be refused as a whole: other batches (the GET/SET
    // path) do not record where each reply ends.
    forwarder_.run(exec, out, batch_touches_ ? &reply_ends_ : nullptr);
    // The forwarder syncs the other shards' logs; this one's ran inline:
    // --fsync always (durable before the reply) and --log-buffer-limit.
    db_.local().sync();
    batch_touches_ = false;
    const bool refused = any_touch_refused_.load(std::memory_order_relaxed);
    if (overflowed_.load(std::memory_order_relaxed)) {
        // Never a partial batch: a missing VALUE would read as a miss.
        out.resize(mark);
        out.append(output_overflow_reply);
    } else if (refused) {
        reply_refused_touches(out, mark);
    }
    if (refused) {
        for (std::size_t r = 0; r < requests_.size(); ++r)
            touch_refused_[r].store(false, std::memory_order_relaxed);
        any_touch_refused_.store(false, std::memory_order_relaxed);
    }
    ops_.clear();
    requests_.clear();
}

void session::refuse_touch(std::uint32_t request) noexcept {
    touch_refused_[request].store(true, std::memory_order_relaxed);
    any_touch_refused_.store(true, std::memory_order_relaxed);
}

void session::reply_refused_touches(std::string& out, std::size_t mark) {
    // A request's ops are consecutive, so are their replies: each refused
    // request's run of replies becomes one line. Rare: a copy is fine.
    std::string replies;
    replies.reserve(out.size() - mark);
    std::size_t begin = mark;
    for (std::size_t i = 0; i < ops_.size(); ++i) {
        const std::uint32_t request = ops_[i].request;
        const std::size_t end = reply_ends_[i];
        if (request == no_request || !touch_refused_[request].load(std::memory_order_relaxed)) {
            replies.append(out, begin, end - begin);
        } else if (i == 0 || ops_[i - 1].request != request) {
            replies.append(replies::no_disk);
        }
        begin = end;
    }
    out.resize(mark);
    out.append(replies);
    // A refused request cut at the batch's end: skip the rest of its keys.
    if (resuming_ && touch_refused_[requests_.size() - 1].load(std::memory_order_relaxed))
        resume_refused_ = true;
}

void session::executor::operator()(db_shard& shard, std::uint32_t tag, std::string& out) const {
    const std::size_t mark = out.size();
    try {
        run(shard, tag, out);
    } catch (const std::exception& e) {
        // A fault in one request (e.g. bad_alloc) fails that request only.
        client_log::failed_requests().error("kv memcache: request failed on shard {}: {}",
                                            this_shard_id(), e.what());
        out.resize(mark);
        out.append("SERVER_ERROR ");
        out.append(e.what());
        out.append("\r\n");
    }
}

bool session::executor::can_read_shared(std::uint32_t tag) const noexcept {
    const op& o = self->ops_[tag];
    if (o.kind != op_kind::keyed) return false;
    const command cmd = self->requests_[o.request].cmd;
    return cmd == command::get || cmd == command::gets;
}

bool session::executor::read_shared(const store& owner, std::uint32_t tag, std::string& out) const {
    const op& o = self->ops_[tag];
    const request& r = self->requests_[o.request];
    const auto found = owner.read_shared_into(out, o.key, key_hash(o.key), this_shard_id(),
                                              [&](const item_view& v) {
                                                  if (!self->over_output_limit(out, v.value.size()))
                                                      append_value(out, v, r.cmd == command::gets);
                                              });
    if (found == store::shared_read::retry) return false;
    self->db_.local().store().count_shared_get(found == store::shared_read::hit);
    return true;
}

void session::executor::run(db_shard& shard, std::uint32_t tag, std::string& out) const {
    const op& o = self->ops_[tag];
    if (o.kind == op_kind::literal) {
        out.append(o.text);
        return;
    }
    const request& r = self->requests_[o.request];
    store& s = shard.store();
    if (!s.accepting_writes() && r.cmd != command::get && r.cmd != command::gets) {
        // The disk of --data-dir is full: reads go on, writes are refused.
        // gat/gats log a touch: refused as a whole (see run_batch), even
        // for a missing key, like touch.
        if (is_retrieval(r.cmd)) {
            self->refuse_touch(o.request);
        } else if (!r.noreply) {
            out.append(replies::no_disk);
        }
        return;
    }
    switch (r.cmd) {
        case command::get:
        case command::gets: {
            if (auto v = s.get(o.key)) {
                if (self->over_output_limit(out, v->value.size())) return;
                append_value(out, *v, r.cmd == command::gets);
            }
            return;
        }
        case command::gat:
        case command::gats: {
            if (auto v = s.get_and_touch(o.key, to_expiry(r.exptime, clock::now()))) {
                if (self->over_output_limit(out, v->value.size())) return;
                append_value(out, *v, r.cmd == command::gats);
            }
            return;
        }
        case command::set:
        case command::add:
        case command::replace:
        case command::append:
        case command::prepend:
        case command::cas: {
            store_result result;
            if (r.too_large) {
                // memcached drops the old value of a refused set.
                if (r.cmd == command::set) s.remove(o.key);
                result = store_result::too_large;
            } else {
                set_options options;
                options.mode = mode_of(r.cmd);
                options.flags = r.flags;
                options.expiry = to_expiry(r.exptime, clock::now());
                options.cas = r.number;
                result = s.set(o.key, r.data, options);
            }
            if (!r.noreply) out.append(storage_reply(result));
            return;
        }
        case command::del: {
            const auto result = s.remove(o.key);
            if (!r.noreply)
                out.append(result == store_result::deleted ? "DELETED\r\n" : "NOT_FOUND\r\n");
            return;
        }
        case command::incr:
        case command::decr: {
            const auto result =
                r.cmd == command::incr ? s.incr(o.key, r.number) : s.decr(o.key, r.number);
            if (r.noreply) return;
            if (result.status == store_result::stored) {
                append_number(out, result.value);
                out.append("\r\n");
            } else if (result.status == store_result::non_numeric) {
                out.append(replies::non_numeric);
            } else {
                out.append(storage_reply(result.status));
            }
            return;
        }
        case command::touch: {
            const auto result = s.touch(o.key, to_expiry(r.exptime, clock::now()));
            if (!r.noreply)
                out.append(result == store_result::touched ? "TOUCHED\r\n" : "NOT_FOUND\r\n");
            return;
        }
        default:
            out.append("SERVER_ERROR unexpected command\r\n");
            return;
    }
}

bool session::over_output_limit(const std::string& out, std::size_t more) {
    // One value alone always fits (bounded by --max-item-size); past that,
    // what this shard holds for the batch stays under its share of
    // --max-output-buffer.
    if (out.empty() || out.size() + more <= max_output_) return false;
    overflowed_.store(true, std::memory_order_relaxed);
    return true;
}

process_result session::process(std::string_view input, std::string& out) {
    process_result result = process_requests(input, out);
    if (overflowed_.load(std::memory_order_relaxed)) {
        client_log::closed_connections().warn(
            "kv memcache: closing a connection whose replies passed --max-output-buffer "
            "({} bytes)",
            db_.local().config().max_output_buffer);
        ++db_.local().connections().output_buffer_disconnections;
        result.close = true;
        result.more = false;
    }
    result.in_request = parser_.swallowing() > 0;
    return result;
}

process_result session::process_requests(std::string_view input, std::string& out) {
    std::size_t pos = 0;
    process_result result;
    // Adds the keys of a retrieval request from `offset` until the batch is
    // full; returns true when all its keys (and its END) are in.
    auto add_keys = [&](const request& r, std::size_t offset, std::size_t end) {
        const auto index = static_cast<std::uint32_t>(requests_.size());
        requests_.push_back(r);
        if (r.cmd == command::gat || r.cmd == command::gats) batch_touches_ = true;
        key_cursor keys(input.substr(offset, end - offset));
        std::string_view key;
        while (ops_.size() < max_batch) {
            if (!keys.next(key)) {
                add_literal("END\r\n", index);
                resuming_ = false;
                return true;
            }
            add_keyed(index, key);
        }
        // Full: remember where to go on (the input is unchanged until then).
        resuming_ = true;
        resume_request_ = r;
        resume_offset_ = static_cast<std::size_t>(key.data() + key.size() - input.data());
        resume_end_ = end;
        return false;
    };

    if (resuming_) {
        if (resume_refused_) {
            // A gat refused in an earlier batch: it got its SERVER_ERROR
            // there, its other keys are not touched.
            resuming_ = false;
            resume_refused_ = false;
        } else if (!add_keys(resume_request_, resume_offset_, resume_end_)) {
            run_batch(out);
            result.more = true;
            return result;
        }
        pos = resume_line_size_;
    }

    while (ops_.size() < max_batch) {
        request r;
        const auto parsed = parser_.parse(input.substr(pos), r);
        if (parsed.status == parse_status::need_more) break;
        if (parsed.status == parse_status::skip) {
            pos += parsed.consumed;
            continue;
        }
        if (parsed.status == parse_status::error) {
            if (!parsed.reply.empty()) add_literal(parsed.reply);
            pos += parsed.consumed;
            continue;
        }
        if (parsed.status == parse_status::close) {
            add_literal(parsed.reply);
            pos += parsed.consumed;
            result.close = true;
            break;
        }
        if (is_retrieval(r.cmd)) {
            const auto offset = static_cast<std::size_t>(r.keys.data() - input.data());
            if (!add_keys(r, offset, offset + r.keys.size())) {
                // Cut: this request stays unconsumed until its last batch.
                resume_line_size_ = pos + parsed.consumed;
                // Offsets are relative to the input of the next call, which
                // starts at `pos` once the bytes before it are consumed.
                resume_offset_ -= pos;
                resume_end_ -= pos;
                resume_line_size_ -= pos;
                run_batch(out);
                result.consumed = pos;
                result.more = true;
                return result;
            }
            pos += parsed.consumed;
            continue;
        }
        switch (r.cmd) {
            case command::version:
                add_literal(version_line);
                break;
            case command::verbosity:
                if (!r.noreply) add_literal("OK\r\n");
                break;
            case command::flush_all: {
                run_batch(out);
                const time_point now = clock::now();
                time_point when = r.exptime > 0 ? to_expiry(r.exptime, now) : now;
                const bool flushed = flush_all(db_, when);
                if (!r.noreply) out.append(flushed ? std::string_view("OK\r\n") : replies::no_disk);
                break;
            }
            case command::stats:
                run_batch(out);
                if (r.args.empty()) {
                    append_stats(out);
                } else {
                    out.append(replies::error);
                }
                break;
            case command::quit:
                pos += parsed.consumed;
                run_batch(out);
                result.consumed = pos;
                result.close = true;
                return result;
            default: {
                const auto index = static_cast<std::uint32_t>(requests_.size());
                requests_.push_back(r);
                add_keyed(index, r.key);
                break;
            }
        }
        pos += parsed.consumed;
    }
    result.more = !result.close && ops_.size() >= max_batch;
    run_batch(out);
    result.consumed = pos;
    return result;
}

void session::append_stats(std::string& out) {
    const db_stats totals = collect_stats(db_);
    const auto& st = totals.store;
    const auto& config = db_.local().config();
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    auto seconds = [](const timeval& tv) {
        return std::to_string(tv.tv_sec) + "." +
               std::to_string(tv.tv_usec / 1000000.0).substr(2, 6);
    };
    const auto uptime =
        std::chrono::duration_cast<std::chrono::seconds>(clock::now() - db_shard::started_at());
    stat(out, "pid", static_cast<std::uint64_t>(getpid()));
    stat(out, "uptime", static_cast<std::uint64_t>(uptime.count()));
    stat(out, "time", static_cast<std::uint64_t>(unix_now()));
    stat(out, "version", server_version);
    stat(out, "pointer_size", 64);
    stat(out, "rusage_user", seconds(usage.ru_utime));
    stat(out, "rusage_system", seconds(usage.ru_stime));
    stat(out, "max_connections", config.max_connections);
    stat(out, "curr_connections", totals.connections.curr_connections);
    stat(out, "total_connections", totals.connections.total_connections);
    stat(out, "rejected_connections", totals.connections.rejected_connections);
    // Clients of either protocol closed past --max-output-buffer (kv's own stat).
    stat(out, "output_buffer_disconnections", totals.connections.output_buffer_disconnections);
    stat(out, "cmd_get", st.cmd_get);
    stat(out, "cmd_set", st.cmd_set);
    stat(out, "cmd_flush", totals.connections.flush_commands);
    stat(out, "cmd_touch", st.cmd_touch);
    stat(out, "get_hits", st.get_hits);
    stat(out, "get_misses", st.get_misses);
    stat(out, "percore_shared_gets", st.shared_gets);  // of cmd_get: no cross-shard call
    stat(out, "get_expired", st.get_expired);
    stat(out, "delete_misses", st.delete_misses);
    stat(out, "delete_hits", st.delete_hits);
    stat(out, "incr_misses", st.incr_misses);
    stat(out, "incr_hits", st.incr_hits);
    stat(out, "decr_misses", st.decr_misses);
    stat(out, "decr_hits", st.decr_hits);
    stat(out, "cas_misses", st.cas_misses);
    stat(out, "cas_hits", st.cas_hits);
    stat(out, "cas_badval", st.cas_badval);
    stat(out, "touch_hits", st.touch_hits);
    stat(out, "touch_misses", st.touch_misses);
    stat(out, "threads", shard_count());
    stat(out, "bytes", st.bytes);
    stat(out, "curr_items", st.curr_items);
    stat(out, "total_items", st.total_items);
    stat(out, "expired_unfetched", st.expired - st.get_expired);
    stat(out, "evictions", st.evictions);
    stat(out, "reclaimed", st.expired);
    stat(out, "limit_maxbytes", config.max_memory);
    stat(out, "item_size_max", parser_.limits().max_item_size);
    // Not in memcached: how the keys spread over the shards.
    for (std::size_t i = 0; i < totals.items_per_shard.size(); ++i)
        stat(out, "shard_" + std::to_string(i) + "_items", totals.items_per_shard[i]);
    out.append("END\r\n");
}

}  // namespace percore::kv::memcache

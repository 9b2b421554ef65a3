// libFuzzer target for the kv app's memcached text-protocol parser
// (apps/kv/memcache/memcache_parser.hpp). The input is a byte stream as a client would
// send it. It is parsed twice, the way memcache::session does: once whole,
// once arriving in reads of random sizes with consumed bytes dropped between
// calls. Both must give the same requests and replies, every result must keep
// the parser's contract (progress, views inside the input, bounded buffering),
// and each parsed request, written back canonically, must parse the same.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "memcache/memcache_parser.hpp"

using namespace percore::kv::memcache;
using percore::fuzz::within;

namespace {

const char* command_name(command c) {
    static const char* names[] = {"get",     "gets",      "gat",    "gats",    "set",
                                  "add",     "replace",   "append", "prepend", "cas",
                                  "delete",  "incr",      "decr",   "touch",   "flush_all",
                                  "version", "verbosity", "stats",  "quit"};
    return names[static_cast<int>(c)];
}

// Everything a request carries, as one comparable string.
std::string describe(const request& r) {
    std::string s = command_name(r.cmd);
    if (r.noreply) s += " noreply";
    if (r.too_large) s += " too_large";
    s += " key=" + std::string(r.key) + " keys=";
    key_cursor keys(r.keys);
    std::string_view k;
    while (keys.next(k)) s += std::string(k) + ",";
    s += " data=" + std::string(r.data) + " args=" + std::string(r.args);
    s += " flags=" + std::to_string(r.flags) + " exp=" + std::to_string(r.exptime) +
         " n=" + std::to_string(r.number);
    return s;
}

// The request as a client would write it; parsing it must give `r` again.
std::string serialize(const request& r) {
    std::string s = command_name(r.cmd);
    auto arg = [&s](std::string_view a) {
        s += ' ';
        s += a;
    };
    const std::string noreply = r.noreply ? " noreply" : "";
    switch (r.cmd) {
        case command::gat:
        case command::gats:
            arg(std::to_string(r.exptime));
            [[fallthrough]];
        case command::get:
        case command::gets: {
            key_cursor keys(r.keys);
            std::string_view k;
            while (keys.next(k)) arg(k);
            break;
        }
        case command::set:
        case command::add:
        case command::replace:
        case command::append:
        case command::prepend:
        case command::cas:
            arg(r.key);
            arg(std::to_string(r.flags));
            arg(std::to_string(r.exptime));
            arg(std::to_string(r.data.size()));
            if (r.cmd == command::cas) arg(std::to_string(r.number));
            s += noreply + "\r\n" + std::string(r.data);
            break;
        case command::del:
            arg(r.key);
            s += noreply;
            break;
        case command::incr:
        case command::decr:
            arg(r.key);
            arg(std::to_string(r.number));
            s += noreply;
            break;
        case command::touch:
            arg(r.key);
            arg(std::to_string(r.exptime));
            s += noreply;
            break;
        case command::flush_all:
            arg(std::to_string(r.exptime));
            s += noreply;
            break;
        case command::verbosity:
            arg(std::to_string(r.number));
            s += noreply;
            break;
        case command::stats:
            arg(r.args);
            break;
        case command::version:
        case command::quit:
            break;
    }
    return s + "\r\n";
}

// Checks one parse result against the parser's contract.
void check_result(const parser& p, std::string_view in, const parse_result& res, const request& r) {
    FUZZ_CHECK(res.consumed <= in.size());
    switch (res.status) {
        case parse_status::need_more:
            FUZZ_CHECK(res.consumed == 0);
            // A connection never has to buffer more than one request's worth.
            FUZZ_CHECK(in.size() < p.max_request_size());
            break;
        case parse_status::skip:
            FUZZ_CHECK(res.consumed > 0);
            break;
        case parse_status::error:
            FUZZ_CHECK(res.consumed > 0);  // else the session would loop on it
            FUZZ_CHECK(res.reply.empty() || res.reply.ends_with("\r\n"));
            break;
        case parse_status::close:
            FUZZ_CHECK(res.consumed > 0 && !res.reply.empty());
            break;
        case parse_status::request: {
            FUZZ_CHECK(res.consumed > 0);
            const char* base = in.data();
            FUZZ_CHECK(within(r.key, base, res.consumed));
            FUZZ_CHECK(within(r.keys, base, res.consumed));
            FUZZ_CHECK(within(r.data, base, res.consumed));
            FUZZ_CHECK(within(r.args, base, res.consumed));
            FUZZ_CHECK(r.key.size() <= p.limits().max_key_size);
            key_cursor keys(r.keys);
            std::string_view k;
            while (keys.next(k)) FUZZ_CHECK(!k.empty() && k.size() <= p.limits().max_key_size);
            if (is_storage(r.cmd) && !r.too_large) {
                FUZZ_CHECK(r.data.size() <= p.limits().max_item_size);
                // The value ends the request, followed by its CRLF.
                FUZZ_CHECK(r.data.data() + r.data.size() + 2 == base + res.consumed ||
                           r.data.empty());
                FUZZ_CHECK(in.substr(res.consumed - 2, 2) == "\r\n");
            }
            FUZZ_CHECK(r.too_large == false || is_storage(r.cmd));
            break;
        }
    }
}

// What one parse produced, for comparing the whole and the chunked runs
// (skips are an artefact of chunking and not recorded).
std::string event(const parse_result& res, const request& r) {
    switch (res.status) {
        case parse_status::request:
            return "request " + describe(r);
        case parse_status::error:
            return "error " + std::string(res.reply);
        case parse_status::close:
            return "close " + std::string(res.reply);
        default:
            return {};
    }
}

void check_round_trip(const parser_limits& limits, const request& r) {
    if (r.too_large) return;  // the refused value is gone
    const std::string text = serialize(r);
    parser again(limits);
    request r2;
    const auto res = again.parse(text, r2);
    if (res.status != parse_status::request || res.consumed != text.size() ||
        describe(r2) != describe(r)) {
        std::fprintf(stderr, "parsed:   %s\nwritten:  %s\nreparsed: %s (status %d)\n",
                     describe(r).c_str(), text.c_str(), describe(r2).c_str(),
                     static_cast<int>(res.status));
        FUZZ_CHECK(!"a parsed request written back parses differently");
    }
}

struct run_result {
    std::vector<std::string> events;
    std::size_t left = 0;        // bytes never consumed
    std::size_t swallowing = 0;  // the parser's pending skip
    bool closed = false;
};

// Feeds `data` to a fresh parser in reads of `chunks` sizes (all at once when
// chunks is null), parsing after each read like memcache::session::process.
run_result run(const parser_limits& limits, std::string_view data, percore::fuzz::chunker* chunks,
               bool round_trip) {
    parser p(limits);
    run_result out;
    std::string buffer;  // received, not yet consumed
    std::size_t fed = 0;
    for (;;) {
        const std::size_t n = chunks ? chunks->next() : data.size();
        buffer.append(data.substr(fed, n));
        fed = std::min(data.size(), fed + n);
        std::size_t pos = 0;
        for (;;) {
            const std::string_view in = std::string_view(buffer).substr(pos);
            request r;
            const auto res = p.parse(in, r);
            check_result(p, in, res, r);
            if (res.status == parse_status::need_more) break;
            if (res.status != parse_status::skip) out.events.push_back(event(res, r));
            if (round_trip && res.status == parse_status::request) check_round_trip(limits, r);
            pos += res.consumed;
            if (res.status == parse_status::close) {
                out.closed = true;
                return out;
            }
        }
        buffer.erase(0, pos);
        if (fed == data.size()) break;
    }
    out.left = buffer.size();
    out.swallowing = p.swallowing();
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    percore::fuzz::chunker chunks(data, size);
    parser_limits limits;
    // kv's smallest --max-item-size, so refused values fit in a fuzz input.
    if (chunks.flip()) limits.max_item_size = 1024;

    const run_result whole = run(limits, input, nullptr, true);
    const run_result split = run(limits, input, &chunks, false);
    percore::fuzz::require_same_events(whole.events, split.events);
    FUZZ_CHECK(whole.closed == split.closed);
    if (!whole.closed) {
        FUZZ_CHECK(whole.left == split.left);
        FUZZ_CHECK(whole.swallowing == split.swallowing);
    }
    return 0;
}

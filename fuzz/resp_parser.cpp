// libFuzzer target for the kv app's RESP2 request parser
// (apps/kv/resp/resp_parser.hpp). The input is a byte stream as a Redis client
// would send it (multibulk or inline). It is parsed twice, the way the RESP
// connection does: once whole, once arriving in reads of random sizes, each
// call on a fresh copy of the unconsumed bytes (the connection may move its
// buffer between calls, so the parser must keep offsets, not pointers). Both
// runs must give the same requests and errors; every result must keep the
// parser's contract; and each request, written back as multibulk and as a
// quoted inline command, must parse to the same arguments.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "resp/resp_parser.hpp"

using percore::fuzz::within;
using percore::kv::resp_limits;
using percore::kv::resp_parser;

namespace {

using args_list = std::vector<std::string>;

args_list copy_args(const resp_parser& p) {
    args_list out;
    for (std::size_t i = 0; i < p.args().size(); ++i) out.emplace_back(p.args()[i]);
    return out;
}

std::string to_multibulk(const args_list& args) {
    std::string s = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) s += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    return s;
}

// Every byte but letters and digits as \xHH inside double quotes.
std::string to_inline(const args_list& args) {
    static const char hex[] = "0123456789abcdef";
    std::string s;
    for (const auto& a : args) {
        if (!s.empty()) s += ' ';
        s += '"';
        for (unsigned char c : a) {
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
                s += static_cast<char>(c);
            } else {
                s += "\\x";
                s += hex[c >> 4];
                s += hex[c & 15];
            }
        }
        s += '"';
    }
    return s + "\r\n";
}

// Parses `text` (one request) with a fresh authenticated parser.
void check_reparse(const std::string& text, const args_list& want, const char* form) {
    resp_parser p;
    std::vector<char> buf(text.begin(), text.end());
    const auto st = p.parse(buf);
    const bool same =
        st == resp_parser::status::complete && p.consumed() == text.size() && copy_args(p) == want;
    if (!same) {
        std::fprintf(stderr, "%s form of a parsed request parses differently: status %d, %s\n",
                     form, static_cast<int>(st), p.error().c_str());
        FUZZ_CHECK(!"a parsed request written back parses differently");
    }
}

struct run_result {
    std::vector<std::string> events;
    std::size_t left = 0;
    bool closed = false;
};

// Feeds `data` to a fresh parser in reads of `chunks` sizes (all at once when
// null), parsing every complete request after each read.
run_result run(const resp_limits& limits, bool authenticated, std::string_view data,
               percore::fuzz::chunker* chunks, bool round_trip) {
    resp_parser p(limits);
    p.set_authenticated(authenticated);
    run_result out;
    std::string pending;  // received, not yet consumed
    std::size_t fed = 0;
    for (;;) {
        const std::size_t n = chunks ? chunks->next() : data.size();
        pending.append(data.substr(fed, n));
        fed = std::min(data.size(), fed + n);
        for (;;) {
            // A fresh, exactly sized copy each call: ASan catches reads past
            // the received bytes and pointers kept from an earlier call.
            const std::size_t size = pending.size();
            std::unique_ptr<char[]> copy(new char[size ? size : 1]);
            pending.copy(copy.get(), size);
            const auto st = p.parse({copy.get(), size});
            if (st == resp_parser::status::need_more) {
                // The parser asks for more than it has (else the read loop spins).
                FUZZ_CHECK(p.bytes_wanted() > size);
                break;
            }
            if (st == resp_parser::status::error) {
                FUZZ_CHECK(!p.error().empty());
                out.events.push_back("error " + p.error());
                out.closed = true;
                return out;
            }
            FUZZ_CHECK(st == resp_parser::status::complete);
            const std::size_t used = p.consumed();
            FUZZ_CHECK(used > 0 && used <= size);
            for (std::size_t i = 0; i < p.args().size(); ++i)
                FUZZ_CHECK(within(p.args()[i], copy.get(), used));
            // Before AUTH a multibulk may have only a few arguments (an inline
            // request, as in Redis, is bounded by its line length instead).
            // The kind comes from the bytes received: the parser unquotes an
            // inline request in place, so `copy` may no longer show it.
            if (pending[0] == '*') {
                FUZZ_CHECK(authenticated || p.args().size() <= limits.max_unauth_multibulk_len);
                FUZZ_CHECK(p.args().size() <= limits.max_multibulk_len);
            } else {
                FUZZ_CHECK(p.args().size() <= limits.max_inline_len / 2 + 1);
            }
            const args_list args = copy_args(p);
            std::string e = "request";
            for (const auto& a : args) e += " [" + a + "]";
            out.events.push_back(e);
            if (round_trip && !args.empty()) {
                check_reparse(to_multibulk(args), args, "multibulk");
                check_reparse(to_inline(args), args, "inline");
            }
            pending.erase(0, used);
        }
        if (fed == data.size()) break;
    }
    out.left = pending.size();
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    percore::fuzz::chunker chunks(data, size);
    resp_limits limits;
    // Small enough for fuzz inputs to reach the limits' error paths.
    if (chunks.flip()) {
        limits.max_bulk_len = 300;
        limits.max_multibulk_len = 40;
        limits.max_inline_len = 600;
    }
    const bool authenticated = chunks.flip();

    const run_result whole = run(limits, authenticated, input, nullptr, true);
    const run_result split = run(limits, authenticated, input, &chunks, false);
    percore::fuzz::require_same_events(whole.events, split.events);
    FUZZ_CHECK(whole.closed == split.closed);
    if (!whole.closed) FUZZ_CHECK(whole.left == split.left);
    return 0;
}

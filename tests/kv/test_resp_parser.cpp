// The kv app's RESP2 request parser and reply writer: framing, inline
// splitting, Redis's protocol errors, and that the way input is cut into reads
// never changes what is parsed.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "resp/resp_commands.hpp"
#include "resp/resp_parser.hpp"
#include "resp/resp_writer.hpp"

// The replacement operator new/delete below pair malloc with free, which GCC
// cannot see through once they are inlined into std::allocator.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {

// Counts heap allocations so a test can check the parser's hot path makes none.
std::atomic<std::size_t> allocations{0};

}  // namespace

void* operator new(std::size_t size) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
    throw std::bad_alloc();
}
// The other forms too: the library's would not call the one above under ASan
// (it intercepts each form), and memory from ASan's new freed by the delete
// below is an alloc-dealloc mismatch (Catch2 allocates with new(nothrow)).
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    allocations.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size) {
    return operator new(size);
}
void* operator new[](std::size_t size, const std::nothrow_t& nothrow) noexcept {
    return operator new(size, nothrow);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}

using percore::kv::find_resp_command;
using percore::kv::parse_strict_int;
using percore::kv::resp_command_info;
using percore::kv::resp_command_table;
using percore::kv::resp_limits;
using percore::kv::resp_parser;
using percore::kv::resp_writer;

namespace {

// What a connection would see: every request's arguments, then the protocol
// error if one ended the input.
struct outcome {
    std::vector<std::vector<std::string>> requests;
    std::string error;
    bool operator==(const outcome&) const = default;
};

// Feeds `input` to a parser in pieces cut at `cuts` (ascending offsets), the
// way a connection's buffer fills up: append, parse what is complete, drop
// the consumed bytes.
outcome feed(const std::string& input, const std::vector<std::size_t>& cuts,
             resp_limits limits = {}, bool authenticated = true) {
    resp_parser parser(limits);
    parser.set_authenticated(authenticated);
    outcome out;
    std::string buffer;
    std::size_t from = 0;
    auto pieces = cuts;
    pieces.push_back(input.size());
    for (std::size_t to : pieces) {
        buffer.append(input, from, to - from);
        from = to;
        for (;;) {
            auto st = parser.parse({buffer.data(), buffer.size()});
            if (st == resp_parser::status::need_more) break;
            if (st == resp_parser::status::error) {
                out.error = parser.error();
                return out;
            }
            if (!parser.args().empty()) {
                std::vector<std::string> args;
                for (std::size_t i = 0; i < parser.args().size(); ++i) {
                    args.emplace_back(parser.args()[i]);
                }
                out.requests.push_back(std::move(args));
            }
            buffer.erase(0, parser.consumed());
        }
    }
    return out;
}

outcome feed_whole(const std::string& input, resp_limits limits = {}) {
    return feed(input, {}, limits);
}

// Checks that every way of cutting `input` in two, and byte-at-a-time,
// parses the same as the whole.
void check_split_invariant(const std::string& input, resp_limits limits = {}) {
    const outcome whole = feed_whole(input, limits);
    for (std::size_t cut = 1; cut < input.size(); ++cut) {
        INFO("cut at " << cut);
        REQUIRE(feed(input, {cut}, limits) == whole);
    }
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < input.size(); ++i) every.push_back(i);
    REQUIRE(feed(input, every, limits) == whole);
}

std::string multibulk(const std::vector<std::string>& args) {
    std::string s = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) s += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    return s;
}

using args_t = std::vector<std::string>;

}  // namespace

TEST_CASE("resp_parser: multibulk requests", "[resp]") {
    auto out = feed_whole(multibulk({"SET", "key", "value"}) + multibulk({"GET", "key"}));
    REQUIRE(out.error.empty());
    REQUIRE(out.requests == std::vector<args_t>{{"SET", "key", "value"}, {"GET", "key"}});

    // Empty arguments, binary data with NUL and CRLF inside a bulk.
    std::string binary("a\0b\r\nc\r\n", 8);
    out = feed_whole(multibulk({"SET", "", binary}));
    REQUIRE(out.requests == std::vector<args_t>{{"SET", "", binary}});

    // "*0" and "*-1" are no request at all; the next one still parses.
    out = feed_whole("*0\r\n*-1\r\n" + multibulk({"PING"}));
    REQUIRE(out.requests == std::vector<args_t>{{"PING"}});
}

TEST_CASE("resp_parser: more arguments than the inline array spill over", "[resp]") {
    args_t many;
    for (int i = 0; i < 100; ++i) many.push_back("arg" + std::to_string(i));
    auto out = feed_whole(multibulk(many) + multibulk({"GET", "x"}));
    REQUIRE(out.requests == std::vector<args_t>{many, {"GET", "x"}});
}

TEST_CASE("resp_parser: inline requests split like Redis", "[resp]") {
    auto out = feed_whole("PING\r\nset  a   b\n\r\n\n   \r\nGET a\r\n");
    REQUIRE(out.error.empty());
    REQUIRE(out.requests == std::vector<args_t>{{"PING"}, {"set", "a", "b"}, {"GET", "a"}});

    out = feed_whole("set \"a b\" 'c d'\r\n");
    REQUIRE(out.requests == std::vector<args_t>{{"set", "a b", "c d"}});

    out = feed_whole("x \"\\x41\\x4a\\n\\r\\t\\b\\a\\\\\\\"\\q\" 'it\\'s' \"\"\n");
    REQUIRE(out.requests == std::vector<args_t>{{"x", "AJ\n\r\t\b\a\\\"q", "it's", ""}});

    // A quote mid-token starts quoting; "\x4" is not a hex escape.
    out = feed_whole("ab\"c d\"e\n");
    REQUIRE(out.error == "ERR Protocol error: unbalanced quotes in request");
    out = feed_whole("ab\"c d\" e \"\\x4\"\n");
    REQUIRE(out.requests == std::vector<args_t>{{"abc d", "e", "x4"}});

    // The line ends at a NUL byte, as in Redis's C-string splitter.
    out = feed_whole(std::string("get a\0 b\r\n", 10));
    REQUIRE(out.requests == std::vector<args_t>{{"get", "a"}});
}

TEST_CASE("resp_parser: unbalanced quotes in inline requests", "[resp]") {
    for (std::string bad : {"set \"a\n", "set 'a\r\n", "set \"a\"b\n", "set 'a'b\n", "x \"\\\n"}) {
        INFO(bad);
        REQUIRE(feed_whole(bad).error == "ERR Protocol error: unbalanced quotes in request");
    }
}

TEST_CASE("resp_parser: bad framing gets Redis's protocol errors", "[resp]") {
    struct bad_case {
        std::string input;
        std::string error;
    };
    const std::vector<bad_case> cases = {
        {"*abc\r\n", "ERR Protocol error: invalid multibulk length"},
        {"*\r\n", "ERR Protocol error: invalid multibulk length"},
        {"*+1\r\n", "ERR Protocol error: invalid multibulk length"},
        {"*01\r\n", "ERR Protocol error: invalid multibulk length"},
        {"*1 \r\n", "ERR Protocol error: invalid multibulk length"},
        {"*1\n$3\r\nfoo\r\n", "ERR Protocol error: invalid multibulk length"},
        {"*2147483648\r\n", "ERR Protocol error: invalid multibulk length"},
        {"*99999999999999999999\r\n", "ERR Protocol error: invalid multibulk length"},
        {"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"},
        {"*1\r\n$\r\n", "ERR Protocol error: invalid bulk length"},
        {"*1\r\n$03\r\nfoo\r\n", "ERR Protocol error: invalid bulk length"},
        {"*1\r\n$536870913\r\n", "ERR Protocol error: invalid bulk length"},
        {"*1\r\nfoo\r\n", "ERR Protocol error: expected '$', got 'f'"},
        {"*2\r\n$3\r\nGET\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"},
        {"*2\r\n$3\r\nGETXX*1\r\n", "ERR Protocol error: expected '$', got '*'"},
        {std::string(70 * 1024, 'a'), "ERR Protocol error: too big inline request"},
        {"*" + std::string(70 * 1024, '1'), "ERR Protocol error: too big mbulk count string"},
        {"*1\r\n$" + std::string(70 * 1024, '1'), "ERR Protocol error: too big bulk count string"},
    };
    for (const auto& c : cases) {
        INFO(c.input.substr(0, 40));
        auto out = feed_whole(c.input);
        REQUIRE(out.error == c.error);
        REQUIRE(out.requests.empty());
    }
    // A request before the bad one is still served.
    auto out = feed_whole(multibulk({"PING"}) + "*x\r\n");
    REQUIRE(out.requests == std::vector<args_t>{{"PING"}});
    REQUIRE(out.error == "ERR Protocol error: invalid multibulk length");
}

TEST_CASE("resp_parser: the bulk limit is configurable", "[resp]") {
    resp_limits limits;
    limits.max_bulk_len = 10;
    REQUIRE(feed_whole(multibulk({"SET", "k", std::string(10, 'v')}), limits).error.empty());
    REQUIRE(feed_whole(multibulk({"SET", "k", std::string(11, 'v')}), limits).error ==
            "ERR Protocol error: invalid bulk length");
    limits.max_multibulk_len = 2;
    REQUIRE(feed_whole(multibulk({"SET", "k", "v"}), limits).error ==
            "ERR Protocol error: invalid multibulk length");
}

TEST_CASE("resp_parser: unauthenticated clients may not send big requests", "[resp]") {
    args_t eleven(11, "x");
    REQUIRE(feed(multibulk(eleven), {}, {}, false).error ==
            "ERR Protocol error: unauthenticated multibulk length");
    REQUIRE(feed(multibulk({"AUTH", std::string(16385, 'p')}), {}, {}, false).error ==
            "ERR Protocol error: unauthenticated bulk length");
    REQUIRE(feed(multibulk({"AUTH", std::string(16384, 'p')}), {}, {}, false).error.empty());
    REQUIRE(feed(multibulk(eleven), {}, {}, true).error.empty());
}

TEST_CASE("resp_parser: every split at every byte boundary parses the same", "[resp]") {
    std::string binary("k\0\r\n*1\r\n$", 9);
    const std::string requests = multibulk({"SET", binary, "v\r\nv"}) + "PING\r\n" +
                                 multibulk({"MGET", "a", "b", "c", "d", "e", "f", "g", "h", "i"}) +
                                 "*0\r\n" + "set \"q \\x41\" 'r'\r\n" + "\r\n" +
                                 multibulk({"GET", ""}) + "ECHO x\n";
    check_split_invariant(requests);
    REQUIRE(feed_whole(requests).requests.size() == 6);

    // Errors too are reached the same way whatever the cuts.
    check_split_invariant(multibulk({"GET", "a"}) + "*2\r\n$3\r\nGET\r\n$-5\r\n");
    check_split_invariant(multibulk({"GET", "a"}) + "set \"unbalanced\r\n");
    check_split_invariant("*1\r\n$3\r\nabc\r\n*1\r\nxyz\r\n");
    resp_limits small;
    small.max_inline_len = 16;
    check_split_invariant("PING\r\n" + std::string(40, 'z'), small);
    check_split_invariant("*1\r\n$" + std::string(40, '1'), small);
}

TEST_CASE("resp_parser: bytes_wanted covers a big bulk in one go", "[resp]") {
    resp_parser parser;
    std::string buffer = "*2\r\n$3\r\nSET\r\n$100000\r\nabc";
    REQUIRE(parser.parse({buffer.data(), buffer.size()}) == resp_parser::status::need_more);
    REQUIRE(parser.bytes_wanted() == buffer.size() - 3 + 100000 + 2);
    buffer += std::string(100000 - 3, 'x') + "\r\n";
    REQUIRE(parser.parse({buffer.data(), buffer.size()}) == resp_parser::status::complete);
    REQUIRE(parser.consumed() == buffer.size());
    REQUIRE(parser.args()[1].size() == 100000);
}

TEST_CASE("resp_parser: no heap allocation for requests of a few arguments", "[resp]") {
    resp_parser parser;
    std::string buffer;
    for (int i = 0; i < 200; ++i) {
        buffer += multibulk({"SET", "key:" + std::to_string(i), "value", "EX", "100"});
        buffer += "GET key:" + std::to_string(i) + "\r\n";
    }
    std::size_t parsed = 0;
    std::size_t offset = 0;
    const std::size_t before = allocations.load();
    while (offset < buffer.size()) {
        if (parser.parse({buffer.data() + offset, buffer.size() - offset}) !=
            resp_parser::status::complete) {
            break;
        }
        offset += parser.consumed();
        ++parsed;
    }
    const std::size_t after = allocations.load();
    REQUIRE(parsed == 400);
    REQUIRE(after == before);
}

TEST_CASE("parse_strict_int: Redis's string2ll rules", "[resp]") {
    long long v = 7;
    REQUIRE(parse_strict_int("0", v));
    REQUIRE(v == 0);
    REQUIRE(parse_strict_int("-42", v));
    REQUIRE(v == -42);
    REQUIRE(parse_strict_int("9223372036854775807", v));
    REQUIRE(v == 9223372036854775807LL);
    REQUIRE(parse_strict_int("-9223372036854775808", v));
    REQUIRE(v == (-9223372036854775807LL - 1));
    for (const char* bad : {"", "-", "+1", "01", "-0", " 1", "1 ", "1a", "9223372036854775808",
                            "-9223372036854775809", "18446744073709551616", "1.5"}) {
        INFO(bad);
        REQUIRE_FALSE(parse_strict_int(bad, v));
    }
}

TEST_CASE("resp_writer: reply framing", "[resp]") {
    std::string out;
    resp_writer w(out);
    w.ok();
    w.simple("PONG");
    w.error("ERR bad\r\nthing");
    w.integer(-12);
    w.integer(9223372036854775807LL);
    w.bulk(std::string("a\0\r\n", 4));
    w.bulk("");
    w.null_bulk();
    w.array(2);
    w.null_array();
    const std::string expected = std::string("+OK\r\n+PONG\r\n-ERR bad  thing\r\n:-12\r\n") +
                                 ":9223372036854775807\r\n" + "$4\r\n" + std::string("a\0\r\n", 4) +
                                 "\r\n$0\r\n\r\n$-1\r\n*2\r\n*-1\r\n";
    REQUIRE(out == expected);
}

TEST_CASE("resp_parser: line limits hold however the line is split", "[resp][limits]") {
    // Found by fuzz/resp_parser.cpp: a line past max_inline_len was refused
    // when its end had not arrived yet but accepted when it came in one read.
    resp_limits small;
    small.max_inline_len = 16;
    const std::string long_inline = "GET " + std::string(40, 'z') + "\r\n";
    REQUIRE(feed_whole(long_inline, small).error == "ERR Protocol error: too big inline request");
    check_split_invariant("PING\r\n" + long_inline, small);
    REQUIRE(feed_whole("*" + std::string(20, '0') + "1\r\n$1\r\na\r\n", small).error ==
            "ERR Protocol error: too big mbulk count string");
    REQUIRE(feed_whole("*1\r\n$" + std::string(20, '0') + "1\r\na\r\n", small).error ==
            "ERR Protocol error: too big bulk count string");
    check_split_invariant("*1\r\n$" + std::string(20, '0') + "1\r\na\r\n", small);
    // At the limit (16 bytes before the LF, CR included) is still a request.
    REQUIRE(feed_whole("GET " + std::string(11, 'z') + "\r\n", small).requests.size() == 1);
    // The replayed fuzz input itself (tests/fuzz-regressions/resp_parser/).
    resp_limits fuzzed;
    fuzzed.max_inline_len = 600;
    check_split_invariant("GET \"" + std::string(650, 'x') + "\r\n", fuzzed);
}

TEST_CASE("resp_parser: every size a client controls has a limit", "[resp][limits]") {
    // Arguments per request: INT_MAX like Redis 7, configurable; 10 before AUTH.
    REQUIRE(feed_whole("*2147483647\r\n").error.empty());  // waits for the arguments
    resp_limits limits;
    limits.max_multibulk_len = 3;
    REQUIRE(feed_whole(multibulk({"DEL", "a", "b"}), limits).requests.size() == 1);
    REQUIRE(feed_whole(multibulk({"DEL", "a", "b", "c"}), limits).error ==
            "ERR Protocol error: invalid multibulk length");
    // Bulk length: --proto-max-bulk-len (512 MiB), 16 KiB before AUTH.
    REQUIRE(feed_whole("*1\r\n$536870912\r\n").error.empty());
    REQUIRE(feed_whole("*1\r\n$536870913\r\n").error == "ERR Protocol error: invalid bulk length");
    REQUIRE(feed("*1\r\n$16385\r\n", {}, {}, false).error ==
            "ERR Protocol error: unauthenticated bulk length");
    // Inline requests and header lines: 64 KiB.
    REQUIRE(feed_whole("GET " + std::string(64 * 1024, 'k') + "\r\n").error ==
            "ERR Protocol error: too big inline request");
    REQUIRE(feed_whole("GET " + std::string(64 * 1024 - 6, 'k') + "\r\n").requests.size() == 1);
    // A waiting request never asks for more than its declared size.
    resp_parser parser;
    std::string buffer = "*1\r\n$536870912\r\n";
    REQUIRE(parser.parse({buffer.data(), buffer.size()}) == resp_parser::status::need_more);
    REQUIRE(parser.bytes_wanted() == buffer.size() + 536870912 + 2);
}

TEST_CASE("resp command table: every command is found by its name in any case", "[resp]") {
    const auto table = resp_command_table();
    REQUIRE(table.size() > 40);
    for (const resp_command_info& c : table) {
        std::string upper(c.name), mixed(c.name);
        for (std::size_t i = 0; i < upper.size(); ++i) {
            if (upper[i] >= 'a' && upper[i] <= 'z') upper[i] = static_cast<char>(upper[i] - 32);
            if (i % 2 == 0) mixed[i] = upper[i];
        }
        INFO(c.name);
        REQUIRE(find_resp_command(c.name) == &c);
        REQUIRE(find_resp_command(upper) == &c);
        REQUIRE(find_resp_command(mixed) == &c);
    }
    // Unknown names, prefixes, extensions, empty and over-long ones.
    using namespace std::string_view_literals;
    for (std::string_view name :
         {""sv, "ge"sv, "gett"sv, "foo"sv, "get\r"sv, "g\0t"sv, "xyzzy"sv}) {
        INFO(name);
        REQUIRE(find_resp_command(name) == nullptr);
    }
    REQUIRE(find_resp_command(std::string(25, 'a')) == nullptr);
    REQUIRE(find_resp_command(std::string(1000, 'g')) == nullptr);
}

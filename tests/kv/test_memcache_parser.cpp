// The kv app's memcached text-protocol parser: fields, memcached's exact
// error replies, bounds, and incremental parsing (a script split at every
// byte boundary parses to the same requests).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "memcache/memcache_parser.hpp"

using namespace percore::kv::memcache;

namespace {

const char* command_name(command c) {
    static const char* names[] = {"get",     "gets",      "gat",    "gats",    "set",
                                  "add",     "replace",   "append", "prepend", "cas",
                                  "delete",  "incr",      "decr",   "touch",   "flush_all",
                                  "version", "verbosity", "stats",  "quit"};
    return names[static_cast<int>(c)];
}

std::string describe(const request& r) {
    std::string s = command_name(r.cmd);
    if (r.noreply) s += " noreply";
    if (r.too_large) s += " too_large";
    if (!r.key.empty()) s += " key=" + std::string(r.key);
    if (!r.keys.empty()) {
        s += " keys=";
        key_cursor keys(r.keys);
        std::string_view k;
        while (keys.next(k)) s += std::string(k) + ",";
    }
    if (is_storage(r.cmd)) s += " data=" + std::string(r.data);
    if (!r.args.empty()) s += " args=" + std::string(r.args);
    s += " flags=" + std::to_string(r.flags) + " exp=" + std::to_string(r.exptime) +
         " n=" + std::to_string(r.number);
    return s;
}

// Feeds `input` in pieces of `step` bytes (0: all at once) through the loop a
// connection runs, and returns what happened.
std::vector<std::string> run(const std::string& input, std::size_t step = 0,
                             const parser_limits& limits = {}) {
    parser p(limits);
    std::vector<std::string> events;
    std::string buffer;
    std::size_t fed = 0;
    if (step == 0) step = input.size();
    while (fed < input.size()) {
        const std::size_t n = std::min(step, input.size() - fed);
        buffer.append(input, fed, n);
        fed += n;
        for (;;) {
            request r;
            auto res = p.parse(buffer, r);
            if (res.status == parse_status::need_more) break;
            if (res.consumed > buffer.size()) FAIL("consumed more than the input");
            if (res.status == parse_status::request) events.push_back(describe(r));
            if (res.status == parse_status::error)
                events.push_back("error:" + std::string(res.reply));
            if (res.status == parse_status::close) {
                events.push_back("close:" + std::string(res.reply));
                return events;
            }
            if (res.consumed == 0) FAIL("no progress");
            buffer.erase(0, res.consumed);
        }
        // Never more buffered than one request can need.
        if (buffer.size() > p.max_request_size()) FAIL("buffered more than one request needs");
    }
    if (!buffer.empty()) events.push_back("partial:" + std::to_string(buffer.size()));
    return events;
}

std::vector<std::string> one(const std::string& input) {
    return run(input);
}

}  // namespace

TEST_CASE("memcache parser: storage commands", "[memcache]") {
    auto ev = one("set k 5 100 3\r\nabc\r\nadd k2 0 0 0 noreply\r\n\r\ncas k 1 2 1 77\r\nx\r\n");
    REQUIRE(ev.size() == 3);
    CHECK(ev[0] == "set key=k data=abc flags=5 exp=100 n=0");
    CHECK(ev[1] == "add noreply key=k2 data= flags=0 exp=0 n=0");
    CHECK(ev[2] == "cas key=k data=x flags=1 exp=2 n=77");
    // A value holding CRLF is data, not a new request.
    CHECK(one("append a 0 0 4\r\n\r\n\r\n\r\n") ==
          std::vector<std::string>{"append key=a data=\r\n\r\n flags=0 exp=0 n=0"});
    // Flags are 32-bit; negative exptime is allowed; a non-noreply 6th token is ignored.
    CHECK(one("set f 4294967295 -1 1 junk\r\nx\r\n")[0] ==
          "set key=f data=x flags=4294967295 exp=-1 n=0");
}

TEST_CASE("memcache parser: retrieval and other commands", "[memcache]") {
    auto ev = one("get a\r\ngets  a b   c \r\ngat 10 x\r\ngats -1 y z\nversion\r\nquit\r\n");
    REQUIRE(ev.size() == 6);
    CHECK(ev[0] == "get keys=a, flags=0 exp=0 n=0");
    CHECK(ev[1] == "gets keys=a,b,c, flags=0 exp=0 n=0");
    CHECK(ev[2] == "gat keys=x, flags=0 exp=10 n=0");
    CHECK(ev[3] == "gats keys=y,z, flags=0 exp=-1 n=0");
    CHECK(ev[4] == "version flags=0 exp=0 n=0");
    CHECK(ev[5] == "quit flags=0 exp=0 n=0");
    ev = one(
        "delete k\r\ndelete k 0\r\ndelete k noreply\r\ndelete k 0 noreply\r\nincr n 5\r\n"
        "decr n 18446744073709551615 noreply\r\ntouch t 30\r\nflush_all\r\nflush_all 9 noreply\r\n"
        "verbosity 1\r\nstats\r\nstats items\r\n");
    REQUIRE(ev.size() == 12);
    CHECK(ev[0] == "delete key=k flags=0 exp=0 n=0");
    CHECK(ev[1] == "delete key=k flags=0 exp=0 n=0");
    CHECK(ev[2] == "delete noreply key=k flags=0 exp=0 n=0");
    CHECK(ev[3] == "delete noreply key=k flags=0 exp=0 n=0");
    CHECK(ev[4] == "incr key=n flags=0 exp=0 n=5");
    CHECK(ev[5] == "decr noreply key=n flags=0 exp=0 n=18446744073709551615");
    CHECK(ev[6] == "touch key=t flags=0 exp=30 n=0");
    CHECK(ev[7] == "flush_all flags=0 exp=0 n=0");
    CHECK(ev[8] == "flush_all noreply flags=0 exp=9 n=0");
    CHECK(ev[9] == "verbosity flags=0 exp=0 n=1");
    CHECK(ev[10] == "stats flags=0 exp=0 n=0");
    CHECK(ev[11] == "stats args=items flags=0 exp=0 n=0");
}

TEST_CASE("memcache parser: errors as memcached sends them", "[memcache]") {
    const std::string e = "error:ERROR\r\n";
    const std::string fmt = "error:CLIENT_ERROR bad command line format\r\n";
    CHECK(one("foo\r\n") == std::vector<std::string>{e});
    CHECK(one("\r\n") == std::vector<std::string>{e});
    CHECK(one("GET k\r\n") == std::vector<std::string>{e});
    CHECK(one("get\r\ngat\r\n") == std::vector<std::string>{e, e});
    CHECK(one("gat 10\r\n") == std::vector<std::string>{"gat flags=0 exp=10 n=0"});
    CHECK(one("set k 0 0\r\n") == std::vector<std::string>{e});
    CHECK(one("set k 0 0 1 noreply extra\r\n") == std::vector<std::string>{e});
    CHECK(one("cas k 0 0 1\r\n") == std::vector<std::string>{e});
    // Bad numbers: the data line is then parsed as a command, as memcached does.
    CHECK(one("set k 0 abc 1\r\nx\r\n") == std::vector<std::string>{fmt, e});
    CHECK(one("set k -1 0 1\r\nx\r\n") == std::vector<std::string>{fmt, e});
    CHECK(one("set k 18446744073709551616 0 1\r\nx\r\n") == std::vector<std::string>{fmt, e});
    // Like memcached: flags keep their low 32 bits, exptime is an int32.
    CHECK(one("set k 4294967297 4294967296 1\r\nx\r\n")[0] == "set key=k data=x flags=1 exp=0 n=0");
    CHECK(one("set k 0 0 -1\r\n") == std::vector<std::string>{fmt});
    CHECK(one("set k 0 0 2147483647\r\n") == std::vector<std::string>{fmt});
    CHECK(one("cas k 0 0 1 abc\r\nx\r\n") == std::vector<std::string>{fmt, e});
    CHECK(one("set " + std::string(251, 'k') + " 0 0 1\r\nx\r\n") ==
          std::vector<std::string>{fmt, e});
    CHECK(one("get a " + std::string(251, 'k') + "\r\n") == std::vector<std::string>{fmt});
    CHECK(one("incr n x\r\n") ==
          std::vector<std::string>{"error:CLIENT_ERROR invalid numeric delta argument\r\n"});
    CHECK(one("incr n -1\r\n") ==
          std::vector<std::string>{"error:CLIENT_ERROR invalid numeric delta argument\r\n"});
    CHECK(one("touch t x\r\ngat x k\r\nflush_all x\r\n") ==
          std::vector<std::string>(3, "error:CLIENT_ERROR invalid exptime argument\r\n"));
    CHECK(one("delete k 1\r\n") ==
          std::vector<std::string>{
              "error:CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"});
    CHECK(one("verbosity\r\nverbosity x\r\n") == std::vector<std::string>{e, fmt});
    // noreply silences the errors of its own request (not ERROR: it was never parsed).
    CHECK(one("incr x y noreply\r\ndelete k 1 noreply\r\n") ==
          std::vector<std::string>{"error:", "error:"});
    // A data block not ending in CRLF: value + 2 bytes dropped, the rest parsed.
    CHECK(one("set a 0 0 1\r\nab\r\nget a\r\n") ==
          std::vector<std::string>{"error:CLIENT_ERROR bad data chunk\r\n", e,
                                   "get keys=a, flags=0 exp=0 n=0"});
}

TEST_CASE("memcache parser: bounds", "[memcache]") {
    parser_limits limits;
    limits.max_item_size = 1000;
    // An over-long value is refused, its data swallowed even as it trickles in.
    const std::string big = "set b 0 0 5000\r\n" + std::string(5000, 'v') + "\r\nget b\r\n";
    for (std::size_t step : {0, 1, 7, 999, 4096}) {
        auto ev = run(big, step, limits);
        REQUIRE(ev.size() == 2);
        CHECK(ev[0] == "set too_large key=b data= flags=0 exp=0 n=0");
        CHECK(ev[1] == "get keys=b, flags=0 exp=0 n=0");
    }
    // Just under the limit is fine; the buffered input stays bounded (run checks it).
    auto ev = run("set b 0 0 900\r\n" + std::string(900, 'v') + "\r\n", 1, limits);
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].starts_with("set key=b data=vvv"));
    // A line with no end closes the connection instead of buffering forever.
    CHECK(one(std::string(5000, 'x')) ==
          std::vector<std::string>{"close:CLIENT_ERROR line too long\r\n"});
    CHECK(run(std::string(3000, 'x') + "\r\n", 1) ==
          std::vector<std::string>{"close:CLIENT_ERROR line too long\r\n"});
    // Retrieval lines may be longer (many keys).
    std::string many = "get";
    for (int i = 0; i < 1000; ++i) many += " key" + std::to_string(i);
    ev = one(many + "\r\n");
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].starts_with("get keys=key0,key1,"));
    // Binary garbage: errors or a close, never a crash.
    std::string garbage;
    for (int i = 0; i < 3000; ++i) garbage += static_cast<char>((i * 7919) & 0xff);
    ev = run(garbage, 13);
    CHECK(!ev.empty());
    // A request cut short stays pending.
    CHECK(one("set k 0 0 10\r\nabc") == std::vector<std::string>{"partial:17"});
}

TEST_CASE("memcache parser: every split point parses the same", "[memcache]") {
    const std::string script =
        "set k 5 100 3\r\nabc\r\nget k a b\r\ngets k\r\nset n 0 0 2 noreply\r\n10\r\n"
        "incr n 5\r\ndecr n 100 noreply\r\nappend k 0 0 2\r\nde\r\nprepend k 0 0 0\r\n\r\n"
        "cas k 0 0 1 3\r\nz\r\nbogus line\r\nset k 0 abc 1\r\nx\r\ndelete k\r\ntouch k 9\n"
        "gat 5 k a\r\ngats 6 k\r\nflush_all 0\r\nversion\r\nverbosity 2 noreply\r\nstats\r\n"
        "set a 0 0 1\r\nab\r\nset big 0 0 2000000\r\n" +
        std::string(2000000, 'q') + "\r\nget big\r\nquit\r\n";
    const auto whole = one(script);
    REQUIRE(whole.size() == 25);
    // Splitting in two at each boundary of the small part, and byte by byte.
    const std::size_t small_part = script.find("set big");
    for (std::size_t cut = 1; cut < small_part + 20; ++cut) {
        parser p;
        std::vector<std::string> events;
        std::string buffer;
        for (const std::string& piece : {script.substr(0, cut), script.substr(cut)}) {
            buffer += piece;
            for (;;) {
                request r;
                auto res = p.parse(buffer, r);
                if (res.status == parse_status::need_more) break;
                if (res.status == parse_status::request) events.push_back(describe(r));
                if (res.status == parse_status::error)
                    events.push_back("error:" + std::string(res.reply));
                buffer.erase(0, res.consumed);
            }
        }
        INFO("cut at " << cut);
        REQUIRE(events == whole);
    }
    CHECK(run(script, 1) == whole);
    CHECK(run(script, 3) == whole);
    CHECK(run(script, 65536) == whole);
}

TEST_CASE("memcache parser: every size a client controls has a limit", "[memcache][limits]") {
    const std::string fmt = "error:CLIENT_ERROR bad command line format\r\n";
    const std::string e = "error:ERROR\r\n";
    const std::string k250(250, 'k');
    const std::string k251(251, 'k');
    // Key length: 250 bytes like memcached, in every command that takes a key.
    for (const std::string cmd : {"get ", "gets ", "gat 0 ", "gats 0 ", "delete ", "touch "}) {
        INFO(cmd);
        const std::string tail = cmd == "touch " ? " 0\r\n" : "\r\n";
        CHECK(one(cmd + k251 + tail) == std::vector<std::string>{fmt});
        CHECK(one(cmd + k250 + tail).at(0).find(k250) != std::string::npos);
    }
    CHECK(one("incr " + k251 + " 1\r\n") == std::vector<std::string>{fmt});
    CHECK(one("append " + k251 + " 0 0 1 noreply\r\nx\r\n") ==
          std::vector<std::string>{"error:", e});
    // Value length: not negative, not past INT_MAX, nor a number that overflows.
    CHECK(one("set k 0 0 99999999999999999999\r\n") == std::vector<std::string>{fmt});
    CHECK(one("set k 0 0 2147483645\r\n") ==
          std::vector<std::string>{"set too_large key=k data= flags=0 exp=0 n=0"});
    // Arguments: at most 8 tokens after the command.
    CHECK(one("touch k 1 2 3 4 5 6 7 8\r\n") == std::vector<std::string>{e});
    // incr/decr deltas and cas uniques are 64-bit unsigned: one more is refused.
    CHECK(one("incr n 18446744073709551615\r\n")[0] ==
          "incr key=n flags=0 exp=0 n=18446744073709551615");
    CHECK(one("decr n 18446744073709551616\r\n") ==
          std::vector<std::string>{"error:CLIENT_ERROR invalid numeric delta argument\r\n"});
    CHECK(one("cas k 0 0 1 18446744073709551616\r\nx\r\n") == std::vector<std::string>{fmt, e});
    // Expiry: an int32 like memcached (higher bits dropped); past 64 bits an error.
    CHECK(one("touch k 4294967297\r\n")[0] == "touch key=k flags=0 exp=1 n=0");
    CHECK(one("touch k 99999999999999999999\r\n") ==
          std::vector<std::string>{"error:CLIENT_ERROR invalid exptime argument\r\n"});
    CHECK(one("set k 0 -99999999999999999999 1\r\nx\r\n") == std::vector<std::string>{fmt, e});
    CHECK(one("verbosity 99999999999999999999\r\n") == std::vector<std::string>{fmt});
    // Line length: 2048 bytes, 64 KiB for retrievals (many keys); past it the
    // connection is closed, whether the end of line has arrived or not.
    std::string keys;
    while (keys.size() < 70 * 1024) keys += " key" + std::to_string(keys.size());
    CHECK(one("get" + keys + "\r\n") ==
          std::vector<std::string>{"close:CLIENT_ERROR line too long\r\n"});
    CHECK(run("get" + keys, 4096) ==
          std::vector<std::string>{"close:CLIENT_ERROR line too long\r\n"});
    // A connection never needs to buffer more than a line and a value.
    parser p;
    CHECK(p.max_request_size() == 64 * 1024 + 1024 * 1024 + 2);
}

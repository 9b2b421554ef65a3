// The framework's TCP server building block (tcp_server.hpp): a fiber per
// connection running the handler, the connection cap and its refusal, the
// back-off when descriptors run out, and the graceful stop.
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/net.hpp"
#include "percore/tcp_server.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_reactor;

namespace {

const socket_address any_port = socket_address::parse("127.0.0.1:0");

// Echoes until EOF.
void echo(connection& conn) {
    char buf[256];
    for (;;) {
        const std::size_t n = conn.read(std::span(buf));
        if (n == 0) return;
        conn.write_all(std::string_view(buf, n));
    }
}

// Reads everything the peer sends until it closes.
std::string read_to_eof(connection& conn) {
    std::string all;
    char buf[256];
    while (const std::size_t n = conn.read(std::span(buf))) all.append(buf, n);
    return all;
}

std::string roundtrip(connection& conn, std::string_view text) {
    conn.write_all(text);
    std::string got(text.size(), '\0');
    std::size_t n = 0;
    while (n < got.size()) n += conn.read(std::span(got.data() + n, got.size() - n));
    return got;
}

}  // namespace

TEST_CASE("tcp_server runs the handler in a fiber per connection and keeps a registry") {
    run_in_reactor([] {
        tcp_server server(&echo, {.name = "test"});
        const socket_address address = server.listen(any_port);
        connection a = connect(address);
        connection b = connect(address);
        REQUIRE(roundtrip(a, "one") == "one");
        REQUIRE(roundtrip(b, "two") == "two");
        CHECK(server.connections() == 2);
        std::size_t seen = 0;
        server.for_each_connection([&](const connection& c) { seen += c.is_open(); });
        CHECK(seen == 2);
        a.close();
        // The handler sees EOF, returns, and its connection leaves the registry.
        while (server.connections() != 1) yield();
        server.stop();
        CHECK(read_to_eof(b).empty());  // stop() ended the other one
    });
}

TEST_CASE("tcp_server refuses connections past its cap and keeps serving the others") {
    run_in_reactor([] {
        tcp_server server(&echo, {.name = "test", .max_connections = 2, .refusal = "BUSY\n"});
        const socket_address address = server.listen(any_port);
        connection a = connect(address);
        connection b = connect(address);
        REQUIRE(roundtrip(a, "a") == "a");
        REQUIRE(roundtrip(b, "b") == "b");
        connection refused = connect(address);
        CHECK(read_to_eof(refused) == "BUSY\n");
        CHECK(server.refused() == 1);
        REQUIRE(roundtrip(a, "still") == "still");
        b.close();
        while (server.connections() != 1) yield();
        connection c = connect(address);  // room again
        CHECK(roundtrip(c, "c") == "c");
        server.stop();
    });
}

TEST_CASE("tcp_server backs off while descriptors run out, then serves again") {
    rlimit saved{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
    std::uint64_t failures_early = 0, failures_later = 0;
    bool served_after = false;
    run_in_reactor([&] {
        tcp_server server(&echo, {.name = "test"});
        const socket_address address = server.listen(any_port);
        // UndefinedBehaviorSanitizer checks the first member call on each
        // polymorphic type by probing the memory through a pipe, which it
        // cannot open once this test has used every descriptor up: it would
        // report a false "invalid vptr" for the io_error that accept throws.
        // Let it check io_error now, while it can (it caches the answer).
        try {
            throw io_error(EMFILE, "warming the sanitizer's type cache");
        } catch (const io_error& e) {
            REQUIRE(e.error_number() == EMFILE);
            REQUIRE(std::string(e.what()).find("warming") != std::string::npos);
        }
        // Use up the descriptors but one, which the client socket takes:
        // the server's accept then gets EMFILE.
        std::vector<int> filler;
        rlimit low = saved;
        low.rlim_cur = 256;
        REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
        for (;;) {
            const int fd = ::dup(0);
            if (fd < 0) break;
            filler.push_back(fd);
        }
        REQUIRE(!filler.empty());
        ::close(filler.back());
        filler.pop_back();
        std::vector<connection> clients;
        clients.push_back(connect(address));
        // The accept fails for want of a descriptor, and the loop waits
        // (10 ms, doubling) instead of retrying at once: a spinning loop
        // would count thousands of failures here.
        sleep_for(std::chrono::milliseconds(50));
        failures_early = server.accept_failures();
        sleep_for(std::chrono::milliseconds(200));
        failures_later = server.accept_failures();
        // Descriptors come back: the waiting connections get served.
        for (int fd : filler) ::close(fd);
        filler.clear();
        served_after = roundtrip(clients.front(), "back") == "back";
        clients.clear();
        server.stop();
    });
    REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
    CHECK(failures_early >= 1);
    CHECK(failures_later <= 12);
    CHECK(served_after);
}

TEST_CASE("tcp_server's stop lets handlers finish, then cuts off the ones that do not") {
    run_in_reactor([] {
        bool finished_reply = false;
        tcp_server polite(
            [&](connection& conn) {
                echo(conn);  // returns at the EOF stop() makes
                conn.write_all(std::string_view("bye"));
                finished_reply = true;
            },
            {.name = "polite"});
        connection a = connect(polite.listen(any_port));
        REQUIRE(roundtrip(a, "x") == "x");
        polite.stop();
        CHECK(finished_reply);
        CHECK(read_to_eof(a) == "bye");

        bool cut_off = false;
        tcp_server stubborn(
            [&](connection& conn) {
                char buf[16];
                try {
                    while (conn.read(std::span(buf)) > 0) {
                    }
                    sleep_for(std::chrono::seconds(30));  // ignores the EOF
                } catch (const shutdown_error&) {
                    cut_off = true;
                    throw;
                }
            },
            {.name = "stubborn", .stop_timeout = std::chrono::milliseconds(100)});
        connection b = connect(stubborn.listen(any_port));
        b.write_all(std::string_view("y"));
        yield();
        const time_point start = clock::now();
        stubborn.stop();
        // Past its timeout the handler's sleep was interrupted, long before 30 s.
        CHECK(cut_off);
        CHECK(clock::now() - start < std::chrono::seconds(10));
        CHECK(read_to_eof(b).empty());
    });
}

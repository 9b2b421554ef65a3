#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/net.hpp"
#include "percore/smp.hpp"
#include "percore/stream.hpp"
#include "percore/sync.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_reactor;

namespace {

socket_address loopback_any_port() {
    return socket_address::parse("127.0.0.1:0");
}

// Echoes every connection the listener accepts until it is closed.
future<void> spawn_echo_server(listener& l) {
    return spawn({.name = "test echo server"}, [&l] {
        std::vector<future<void>> conns;
        for (;;) {
            connection c;
            try {
                c = l.accept();
            } catch (const io_error& e) {
                REQUIRE(e.error_number() == ECANCELED);
                break;
            }
            conns.push_back(spawn({.name = "echo"}, [c = std::move(c)]() mutable {
                std::vector<char> buf(64 * 1024);
                for (;;) {
                    std::size_t n = c.read(buf);
                    if (n == 0) return;
                    c.write_all(std::string_view(buf.data(), n));
                }
            }));
        }
        when_all(conns);
    });
}

// A listener on a loopback port and a connection to it, both ends.
struct loopback_pair {
    listener l = listen(loopback_any_port());
    connection client = connect(l.local_address());
    connection server = l.accept();
};

std::string pattern(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + seed + (i >> 12)) & 0xff);
    return s;
}

// Sets the process-wide recv policy for one test run and restores it. Tests
// that read take GENERATE(RECV_POLICIES): each policy must behave the same.
struct recv_policy_scope {
    net_tuning::recv_policy saved = default_net_tuning().recv;
    explicit recv_policy_scope(net_tuning::recv_policy policy) {
        default_net_tuning().recv = policy;
        INFO("recv policy " << static_cast<int>(policy));
    }
    ~recv_policy_scope() { default_net_tuning().recv = saved; }
};
#define RECV_POLICIES                                                  \
    net_tuning::recv_policy::readiness, net_tuning::recv_policy::ring, \
        net_tuning::recv_policy::after_full, net_tuning::recv_policy::always

}  // namespace

TEST_CASE("socket addresses parse and print") {
    CHECK(socket_address::parse("127.0.0.1:7000").to_string() == "127.0.0.1:7000");
    CHECK(socket_address::parse("127.0.0.1:7000").port() == 7000);
    CHECK(socket_address::parse("[::1]:80").to_string() == "[::1]:80");
    CHECK(socket_address::parse("[::1]:80").family() == AF_INET6);
    CHECK(socket_address::parse("localhost:1").to_string() == "127.0.0.1:1");
    CHECK(socket_address::parse("unix:/tmp/x.sock").to_string() == "unix:/tmp/x.sock");
    CHECK(socket_address::parse("/tmp/y.sock").path() == "/tmp/y.sock");
    CHECK(socket_address::parse("1.2.3.4:5") == socket_address::inet("1.2.3.4", 5));
    CHECK_THROWS_AS(socket_address::parse("127.0.0.1"), config_error);
    CHECK_THROWS_AS(socket_address::parse("127.0.0.1:70000"), config_error);
    CHECK_THROWS_AS(socket_address::parse("127.0.0.1:x"), config_error);
    CHECK_THROWS_AS(socket_address::parse("example.com:80"), config_error);
    CHECK_THROWS_AS(socket_address::parse("::1:80"), config_error);
    CHECK_THROWS_AS(socket_address::parse("unix:" + std::string(200, 'a')), config_error);
}

TEST_CASE("listen, accept and connect on loopback") {
    run_in_reactor([] {
        listener l = listen(loopback_any_port());
        REQUIRE(l.local_address().port() != 0);
        REQUIRE(l.multishot());
        auto server = spawn([&] {
            connection c = l.accept();
            char buf[16];
            std::size_t n = c.read(buf);
            std::string got(buf, n);
            c.write_all("pong:" + got);
            return c.peer_address();
        });
        connection client = connect(l.local_address(), std::chrono::seconds(5));
        REQUIRE(client.peer_address() == l.local_address());
        client.write_all(std::string_view("ping"));
        input_stream in(client);
        REQUIRE(in.read_exactly(9) == "pong:ping");
        REQUIRE(server.get() == client.local_address());
        client.shutdown();
        l.close();
        REQUIRE_FALSE(l.is_open());
    });
}

TEST_CASE("listen, accept and connect over IPv6 loopback") {
    run_in_reactor([] {
        listener l;
        try {
            l = listen(socket_address::parse("[::1]:0"));
        } catch (const io_error& e) {
            // A kernel or container without IPv6: nothing to test here.
            if (e.error_number() == EADDRNOTAVAIL || e.error_number() == EAFNOSUPPORT) {
                WARN("no IPv6 loopback: " << e.what());
                return;
            }
            throw;
        }
        REQUIRE(l.local_address().family() == AF_INET6);
        REQUIRE(l.local_address().port() != 0);
        auto server = spawn([&] {
            connection c = l.accept();
            char buf[16];
            std::size_t n = c.read(buf);
            c.write_all("v6:" + std::string(buf, n));
            return c.peer_address();
        });
        connection client = connect(l.local_address(), std::chrono::seconds(5));
        REQUIRE(client.local_address().family() == AF_INET6);
        client.write_all(std::string_view("hello"));
        input_stream in(client);
        REQUIRE(in.read_exactly(8) == "v6:hello");
        REQUIRE(server.get() == client.local_address());
        REQUIRE(client.peer_address().to_string() == l.local_address().to_string());
        REQUIRE(l.local_address().to_string().rfind("[::1]:", 0) == 0);
    });
}

TEST_CASE("a 64 MiB round trip arrives intact") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    run_in_reactor([] {
        listener l = listen(loopback_any_port());
        auto server = spawn_echo_server(l);
        connection c = connect(l.local_address());
        constexpr std::size_t total = 64 << 20;
        const std::string chunk_a = pattern(1 << 20, 1);
        const std::string chunk_b = pattern(1 << 20, 2);
        auto writer = spawn([&] {
            output_stream out(c, 4096);
            for (std::size_t sent = 0; sent < total; sent += chunk_a.size()) {
                // Mixed sizes: buffered small writes and direct large ones.
                const std::string& chunk = (sent >> 20) % 2 ? chunk_b : chunk_a;
                out.write(std::string_view(chunk).substr(0, 100));
                out.write(std::string_view(chunk).substr(100));
            }
            out.flush();
            c.shutdown(SHUT_WR);
        });
        input_stream in(c);
        std::size_t received = 0;
        std::size_t mismatches = 0;
        while (received < total) {
            std::string_view piece =
                in.read_exactly(std::min<std::size_t>(total - received, 300'000));
            REQUIRE(!piece.empty());
            for (std::size_t i = 0; i < piece.size(); ++i) {
                std::size_t at = received + i;
                const std::string& chunk = (at >> 20) % 2 ? chunk_b : chunk_a;
                if (piece[i] != chunk[at & ((1 << 20) - 1)]) ++mismatches;
            }
            received += piece.size();
        }
        REQUIRE(mismatches == 0);
        REQUIRE(received == total);
        char extra;
        REQUIRE(in.read(std::span<char>(&extra, 1)) == 0);  // EOF after the echo of our FIN
        writer.get();
        l.close();
        server.get();
    });
}

TEST_CASE("two thousand connections at once") {
    constexpr unsigned n = 2000;
    rlimit lim{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &lim) == 0);
    if (lim.rlim_cur < 3 * n) {
        lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4 * n + 100);
        REQUIRE(setrlimit(RLIMIT_NOFILE, &lim) == 0);
    }
    REQUIRE(lim.rlim_cur >= 2 * n + 100);
    run_in_reactor([n] {
        listen_options options;
        options.backlog = 4096;
        options.accept_queue = 64;  // forces multishot accept to pause and resume
        listener l = listen(loopback_any_port(), options);
        auto server = spawn_echo_server(l);
        unsigned connected = 0, ok = 0;
        detail::wait_list all_connected;
        std::vector<future<void>> clients;
        for (unsigned i = 0; i < n; ++i) {
            clients.push_back(spawn({.name = "client", .stack_size = 32 * 1024}, [&, i] {
                connection c = connect(l.local_address(), std::chrono::seconds(30));
                if (++connected == n) {
                    all_connected.wake_all();
                } else {
                    while (connected < n) all_connected.wait();
                }
                std::string msg = "hello " + std::to_string(i);
                c.write_all(msg);
                input_stream in(c, 64);
                if (in.read_exactly(msg.size()) == msg) ++ok;
            }));
        }
        when_all(clients);
        REQUIRE(connected == n);
        REQUIRE(ok == n);
        l.close();
        server.get();
    });
}

TEST_CASE("single-shot accept (no multishot) works the same") {
    run_in_reactor([] {
        listen_options options;
        options.multishot = false;
        listener l = listen(loopback_any_port(), options);
        REQUIRE_FALSE(l.multishot());
        auto server = spawn_echo_server(l);
        for (int i = 0; i < 3; ++i) {
            connection c = connect(l.local_address());
            c.write_all(std::string_view("abc"));
            input_stream in(c);
            REQUIRE(in.read_exactly(3) == "abc");
        }
        l.close();
        server.get();
    });
}

TEST_CASE("a peer's reset reaches the reader as ECONNRESET") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        client.write_all(std::string_view("partial"));
        char buf[4];
        REQUIRE(server.read(buf) == 4);
        REQUIRE(server.read(buf) == 3);
        auto reader = spawn([&] {
            char more[16];
            try {
                server.read(more);  // waits in the ring until the reset
            } catch (const io_error& e) {
                return e.error_number();
            }
            return 0;
        });
        yield();            // let the reader block
        linger hard{1, 0};  // close with RST
        REQUIRE(setsockopt(client.fd(), SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)) == 0);
        client.close();
        REQUIRE(reader.get() == ECONNRESET);
    });
}

TEST_CASE("a read past its deadline throws timeout_error and leaves the connection usable") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        char buf[8];
        REQUIRE_THROWS_AS(server.read(buf, clock::now() + std::chrono::milliseconds(30)),
                          timeout_error);
        input_stream in(server);
        in.set_deadline(clock::now() + std::chrono::milliseconds(30));
        REQUIRE_THROWS_AS(in.read_until("\n", 100), timeout_error);
        in.set_deadline(std::nullopt);
        client.write_all(std::string_view("line\n"));
        REQUIRE(in.read_until("\n", 100) == "line\n");
        REQUIRE_THROWS_AS(l.accept(clock::now() + std::chrono::milliseconds(10)), timeout_error);
    });
}

TEST_CASE("a deadline that was met does not cancel a later read") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    using namespace std::chrono_literals;
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        char buf[8];
        // Waits in the ring (nothing is buffered yet) and is met before its deadline.
        auto first = spawn([&] {
            sleep_for(5ms);
            client.write_all(std::string_view("a"));
        });
        REQUIRE(server.read(buf, clock::now() + 40ms) == 1);
        first.get();
        // The same call waits again past the first deadline: its operation
        // (same stack slot, same user_data) must not be the one cancelled.
        auto second = spawn([&] {
            sleep_for(80ms);
            client.write_all(std::string_view("b"));
        });
        REQUIRE(server.read(buf, clock::now() + 10s) == 1);
        second.get();
        CHECK(buf[0] == 'b');
    });
}

TEST_CASE("a read without a deadline is not cut short by an earlier read's") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    using namespace std::chrono_literals;
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        char buf[8];
        client.write_all(std::string_view("a"));
        REQUIRE(server.read(buf, clock::now() + 20ms) == 1);  // leaves the read alarm armed
        auto late = spawn([&] {
            sleep_for(60ms);  // past the first read's deadline
            client.write_all(std::string_view("b"));
        });
        REQUIRE(server.read(buf) == 1);
        late.get();
        CHECK(buf[0] == 'b');
    });
}

TEST_CASE("a read's deadline earlier than the last read's is kept") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    // The connection's read alarm stays armed at the last read's deadline
    // (10 s away); the next read's much earlier one must move it.
    using namespace std::chrono_literals;
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        char buf[8];
        client.write_all(std::string_view("a"));
        REQUIRE(server.read(buf, clock::now() + 10s) == 1);
        const time_point start = clock::now();
        REQUIRE_THROWS_AS(server.read(buf, start + 30ms), timeout_error);
        CHECK(clock::now() - start < 5s);  // not the 10 s of the first read
        client.write_all(std::string_view("b"));
        REQUIRE(server.read(buf, clock::now() + 10s) == 1);
        CHECK(buf[0] == 'b');
    });
}

TEST_CASE("a connection moved while its poll is armed reads on, and closes cleanly") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        char buf[8];
        client.write_all(std::string_view("a"));
        REQUIRE(server.read(buf) == 1);  // the readiness poll is armed from here on
        connection moved = std::move(server);
        auto reader = spawn([&] {
            char more[8];
            return moved.read(more);  // waits on the poll armed by `server`
        });
        yield();
        client.write_all(std::string_view("bc"));
        REQUIRE(reader.get() == 2);
        connection again;
        again = std::move(moved);
        client.write_all(std::string_view("d"));
        REQUIRE(again.read(buf) == 1);
        REQUIRE(buf[0] == 'd');
        again.close();  // the armed poll is cancelled; its handler frees itself
        client.write_all(std::string_view("e"));  // no completion reaches a freed handler
        yield();
        client.shutdown(SHUT_WR);
    });
}

TEST_CASE("streams: lines, records, limits and EOF") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        {
            output_stream out(client, 64);
            out.write("GET a\r\nSET b 5\r\nhello\r\n");
            out.write(std::string(100, 'x'));  // longer than the buffer
            out.write("\r\n");
            REQUIRE(out.buffered() == 2);
            out.flush();
            REQUIRE(out.buffered() == 0);
        }
        client.write_all(std::string_view("tail-without-newline"));
        client.shutdown(SHUT_WR);
        input_stream in(server, 64, 1024);
        REQUIRE(in.read_until("\r\n", 100) == "GET a\r\n");
        REQUIRE(in.read_until("\r\n", 100) == "SET b 5\r\n");
        REQUIRE(in.read_exactly(7) == "hello\r\n");
        try {
            in.read_until("\r\n", 50);
            FAIL("a 100-byte line passed a 50-byte limit");
        } catch (const io_error& e) {
            REQUIRE(e.error_number() == EMSGSIZE);
        }
        REQUIRE(in.read_exactly(102) == std::string(100, 'x') + "\r\n");
        REQUIRE_THROWS_AS(in.read_exactly(4096), io_error);  // over max_buffer
        REQUIRE(in.read_until("\n", 100) == "tail-without-newline");
        REQUIRE(in.eof());
        REQUIRE(in.read_exactly(5).empty());
    });
}

TEST_CASE("Unix-domain sockets: connect, echo, and a stale path is replaced") {
    std::string path = "/tmp/percore-test-net-" + std::to_string(::getpid()) + ".sock";
    run_in_reactor([&] {
        auto address = socket_address::parse("unix:" + path);
        for (int round = 0; round < 2; ++round) {
            listener l = listen(address);  // round 1: the path from round 0 is stale
            REQUIRE(l.local_address().path() == path);
            auto server = spawn_echo_server(l);
            connection c = connect(address);
            c.write_all(std::string_view("over unix"));
            input_stream in(c);
            REQUIRE(in.read_exactly(9) == "over unix");
            c.close();
            l.close();
            server.get();
        }
        // A live listener's path is not stolen.
        listener live = listen(address);
        REQUIRE_THROWS_AS(listen(address), io_error);
    });
    ::unlink(path.c_str());
}

TEST_CASE("closing a listener or a connection wakes their waiting fibers with ECANCELED") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    run_in_reactor([] {
        auto [l, client, server] = loopback_pair{};
        auto waiting_accept = spawn([&] {
            try {
                l.accept();
            } catch (const io_error& e) {
                return e.error_number();
            }
            return 0;
        });
        auto waiting_read = spawn([&] {
            char buf[8];
            try {
                client.read(buf);
            } catch (const io_error& e) {
                return e.error_number();
            }
            return 0;
        });
        yield();
        yield();
        l.close();
        client.close();
        REQUIRE(waiting_accept.get() == ECANCELED);
        REQUIRE(waiting_read.get() == ECANCELED);
        REQUIRE_THROWS_AS(l.accept(), io_error);
        char buf[1];
        REQUIRE_THROWS_AS(client.read(buf), io_error);
    });
}

TEST_CASE("stopping the shard wakes fibers waiting in accept and read with shutdown_error") {
    recv_policy_scope policy(GENERATE(RECV_POLICIES));
    int accept_outcome = 0, read_outcome = 0;  // 1: shutdown_error, 2: anything else
    // Outlive the body: the fibers still use them while the shard stops.
    listener l;
    connection client;
    run_in_reactor([&] {
        l = listen(loopback_any_port());
        client = connect(l.local_address());
        spawn([&] {
            try {
                l.accept();
                l.accept();  // the second never comes
                accept_outcome = 2;
            } catch (const shutdown_error&) {
                accept_outcome = 1;
            } catch (...) {
                accept_outcome = 2;
            }
        });
        spawn([&] {
            char buf[8];
            try {
                client.read(buf);
                read_outcome = 2;
            } catch (const shutdown_error&) {
                read_outcome = 1;
            } catch (...) {
                read_outcome = 2;
            }
        });
        yield();
        // Returning stops the shard with both fibers still waiting.
    });
    REQUIRE(accept_outcome == 1);
    REQUIRE(read_outcome == 1);
}

TEST_CASE("a released connection moves to another shard and keeps its stream") {
    auto policy = GENERATE(RECV_POLICIES);
    std::string echoed_there;
    int fd_after = 0;
    unsigned served_on = 0;
    percore::testing::run_in_shards(2, [&] {
        recv_policy_scope scope(policy);
        auto [l, client, server] = loopback_pair{};
        // Shard 0 reads one request, which arms its poll (or ring read) on the socket.
        client.write_all(std::string_view("first"));
        char buf[5];
        REQUIRE(server.read(buf) == 5);
        const int fd = server.release();
        REQUIRE(fd >= 0);
        fd_after = server.fd();
        // Data that arrives while nobody owns the socket is not lost.
        client.write_all(std::string_view("second"));
        auto moved = submit_to(1, [fd] {
            connection adopted(fd);
            char got[6];
            std::size_t n = 0;
            while (n < sizeof got) n += adopted.read(std::span(got + n, sizeof got - n));
            adopted.write_all(std::string_view(got, n));
            return std::make_pair(std::string(got, n), this_shard_id());
        });
        char reply[6];
        std::size_t n = 0;
        while (n < sizeof reply) n += client.read(std::span(reply + n, sizeof reply - n));
        auto [seen, shard] = moved.get();
        REQUIRE(std::string(reply, n) == "second");
        echoed_there = seen;
        served_on = shard;
    });
    REQUIRE(fd_after == -1);
    REQUIRE(echoed_there == "second");
    REQUIRE(served_on == 1);
}

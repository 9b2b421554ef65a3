#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "percore/fiber.hpp"
#include "percore/io.hpp"
#include "percore/reactor.hpp"
#include "percore/runtime.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_reactor;
using percore::testing::run_in_shards;

namespace {
struct pipe_fds {
    int read_end = -1;
    int write_end = -1;
    pipe_fds() {
        int fds[2];
        REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
        read_end = fds[0];
        write_end = fds[1];
    }
    ~pipe_fds() {
        ::close(read_end);
        ::close(write_end);
    }
};
}  // namespace

TEST_CASE("each shard runs its own reactor on its own thread") {
    std::atomic<int> seen{0};
    run_in_shards(3, [&] {
        REQUIRE(this_shard_id() == 0);
        REQUIRE(shard_count() == 3);
        REQUIRE(&reactor::of_shard(0) == &reactor::local());
        REQUIRE(&reactor::of_shard(1) != &reactor::of_shard(2));
        REQUIRE_THROWS_AS(reactor::of_shard(3), std::out_of_range);
        seen = 1;
    });
    REQUIRE(seen == 1);
}

TEST_CASE("a fiber suspends on io_uring I/O while others run") {
    run_in_reactor([] {
        pipe_fds p;
        char buffer[16] = {};
        auto reader = spawn([&] {
            return submit_io([&](io_uring_sqe* sqe) {
                io_uring_prep_read(sqe, p.read_end, buffer, sizeof(buffer), 0);
            });
        });
        yield();
        REQUIRE_FALSE(reader.available());
        int w = submit_io(
            [&](io_uring_sqe* sqe) { io_uring_prep_write(sqe, p.write_end, "hello", 5, 0); });
        REQUIRE(w == 5);
        REQUIRE(reader.get() == 5);
        REQUIRE(std::memcmp(buffer, "hello", 5) == 0);
        REQUIRE(reactor::local().stats().io_completed >= 2);
    });
}

TEST_CASE("I/O errors come back as -errno") {
    run_in_reactor([] {
        char buffer[4];
        int r = submit_io(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, 12345, buffer, sizeof(buffer), 0); });
        REQUIRE(r == -EBADF);
        REQUIRE_THROWS_AS(throw_if_error(r, "read"), io_error);
    });
}

TEST_CASE("an I/O deadline cancels the operation with -ETIME") {
    run_in_reactor([] {
        pipe_fds p;
        char buffer[4];
        auto start = clock::now();
        int r = submit_io(
            [&](io_uring_sqe* sqe) {
                io_uring_prep_read(sqe, p.read_end, buffer, sizeof(buffer), 0);
            },
            clock::now() + std::chrono::milliseconds(5));
        REQUIRE(r == -ETIME);
        REQUIRE(clock::now() - start >= std::chrono::milliseconds(5));
    });
}

TEST_CASE("cancel_io_on_fd wakes the fiber waiting on that fd") {
    run_in_reactor([] {
        pipe_fds p;
        char buffer[4];
        auto reader = spawn([&] {
            return submit_io([&](io_uring_sqe* sqe) {
                io_uring_prep_read(sqe, p.read_end, buffer, sizeof(buffer), 0);
            });
        });
        // The reader runs until it waits for its read (no sleep: a yield
        // runs the ready fiber first, deterministically).
        yield();
        cancel_io_on_fd(p.read_end);
        REQUIRE(reader.get() == -ECANCELED);
    });
}

TEST_CASE("shutdown cancels I/O that fibers still wait on") {
    static pipe_fds* p = nullptr;
    pipe_fds pipe;
    p = &pipe;
    static int results = 0;
    results = 0;
    run_in_shards(2, [] {
        for (int i = 0; i < 4; ++i) {
            spawn([] {
                char buffer[4];
                int r = submit_io([&](io_uring_sqe* sqe) {
                    io_uring_prep_read(sqe, p->read_end, buffer, sizeof(buffer), 0);
                });
                if (r == -ECANCELED || r == -EINTR) ++results;
            });
        }
        yield();
    });
    REQUIRE(results == 4);
}

TEST_CASE("a sleeping shard is woken from another thread") {
    run_in_shards(2, [] {
        auto& other = reactor::of_shard(1);
        // Shard 1 has nothing to do: it sleeps in its ring. Waking it must
        // make it run a loop turn. Observed, not assumed after a sleep.
        auto deadline = clock::now() + std::chrono::seconds(5);
        while (!other.sleeping() && clock::now() < deadline) yield();
        REQUIRE(other.sleeping());
        auto turns = other.stats().loop_turns;  // racy read of a counter: only compared
        other.wake();
        deadline = clock::now() + std::chrono::seconds(5);
        while (other.stats().loop_turns == turns && clock::now() < deadline)
            sleep_for(std::chrono::milliseconds(1));
        REQUIRE(other.stats().loop_turns > turns);
    });
}

TEST_CASE("an exception from the main fiber is rethrown by run_shards") {
    REQUIRE_THROWS_WITH(run_in_shards(2, [] { throw std::runtime_error("main failed"); }),
                        "main failed");
}

TEST_CASE("a ring depth the kernel refuses is a config_error, not a crash") {
    runtime_config config;
    config.reactor.ring_depth = 1u << 20;  // above IORING_MAX_ENTRIES
    REQUIRE_THROWS_AS(run_shards(config, [] { return 0; }), config_error);
}

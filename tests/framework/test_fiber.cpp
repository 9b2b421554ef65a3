#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "percore/fiber.hpp"
#include "percore/io.hpp"
#include "percore/reactor.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_reactor;

TEST_CASE("spawn returns the fiber's value through a future") {
    run_in_reactor([] {
        auto f = spawn([] { return 42; });
        REQUIRE(f.get() == 42);
        auto g = spawn([] { return std::string("hello"); });
        REQUIRE(g.get() == "hello");
    });
}

TEST_CASE("a fiber's captures are destroyed on the fiber, before its future is ready") {
    // A captured connection's close() may have to wait for the kernel: its
    // destructor must run on the fiber that ran the body (another fiber it
    // suspended would be the wrong one), whether the body returned or threw.
    struct capture {
        int* destroyed_on_own_fiber;
        detail::fiber_base* body_fiber = nullptr;  // set by the body
        capture(const capture&) = delete;
        capture(capture&& other) noexcept
            : destroyed_on_own_fiber(std::exchange(other.destroyed_on_own_fiber, nullptr)) {}
        explicit capture(int* counter) : destroyed_on_own_fiber(counter) {}
        ~capture() {
            if (!destroyed_on_own_fiber) return;      // moved from
            sleep_for(std::chrono::milliseconds(1));  // suspends: only a fiber can
            if (detail::current_fiber() == body_fiber) ++*destroyed_on_own_fiber;
        }
    };
    run_in_reactor([] {
        int count = 0;
        auto returns = spawn([c = capture(&count)]() mutable {
            c.body_fiber = detail::current_fiber();
            return 7;
        });
        REQUIRE(returns.get() == 7);
        REQUIRE(count == 1);
        auto throws = spawn([c = capture(&count)]() mutable {
            c.body_fiber = detail::current_fiber();
            throw std::runtime_error("body failed");
        });
        REQUIRE_THROWS_AS(throws.get(), std::runtime_error);
        REQUIRE(count == 2);
    });
}

TEST_CASE("fibers interleave at yield in FIFO order") {
    run_in_reactor([] {
        std::vector<int> order;
        auto a = spawn([&] {
            for (int i = 0; i < 3; ++i) {
                order.push_back(i * 2);
                yield();
            }
        });
        auto b = spawn([&] {
            for (int i = 0; i < 3; ++i) {
                order.push_back(i * 2 + 1);
                yield();
            }
        });
        a.get();
        b.get();
        REQUIRE(order == std::vector<int>{0, 1, 2, 3, 4, 5});
    });
}

TEST_CASE("an exception thrown in a fiber reaches whoever waits") {
    run_in_reactor([] {
        auto f = spawn([]() -> int { throw std::runtime_error("boom"); });
        REQUIRE_THROWS_WITH(f.get(), "boom");
    });
}

TEST_CASE("ten thousand concurrent fibers each suspending on a timer") {
    run_in_reactor([] {
        constexpr int n = 10'000;
        std::vector<future<int>> futures;
        futures.reserve(n);
        int finished = 0;
        for (int i = 0; i < n; ++i) {
            futures.push_back(spawn([i, &finished] {
                sleep_for(std::chrono::microseconds(100 + (i % 7) * 50));
                ++finished;
                return i;
            }));
        }
        long sum = 0;
        for (auto& f : futures) sum += f.get();
        REQUIRE(finished == n);
        REQUIRE(sum == static_cast<long>(n) * (n - 1) / 2);
        REQUIRE(reactor::local().stats().fibers_spawned >= static_cast<std::uint64_t>(n));
    });
}

// Frames under ASan (redzones around `pad`) in the sanitized build's -Og
// (std::function's layers not inlined) take about three times the stack.
#if defined(__SANITIZE_ADDRESS__)
constexpr std::size_t deep_stack_size = 4 << 20;
#else
constexpr std::size_t deep_stack_size = 1 << 20;
#endif

TEST_CASE("a deep recursion fits a custom stack size") {
    run_in_reactor([] {
        auto f = spawn({.name = "deep", .stack_size = deep_stack_size}, [] {
            std::function<int(int)> depth = [&](int n) -> int {
                volatile char pad[256];
                pad[0] = static_cast<char>(n);
                return n == 0 ? pad[0] : 1 + depth(n - 1);
            };
            return depth(2000);
        });
        REQUIRE(f.get() == 2000);
    });
}

namespace {
// Spins in maybe_yield() until a fiber spawned beside it has run (or 2 s pass).
void require_maybe_yield_lets_another_run() {
    bool other_ran = false;
    auto other = spawn([&] { other_ran = true; });
    auto start = clock::now();
    while (!other_ran && clock::now() - start < std::chrono::seconds(2)) maybe_yield();
    REQUIRE(other_ran);
    other.get();
}
}  // namespace

TEST_CASE("maybe_yield lets other fibers run once the task quota is spent") {
    reactor_config config;
    config.task_quota = std::chrono::microseconds(200);
    percore::testing::run_in_shards(
        1, [] { require_maybe_yield_lets_another_run(); }, config);
}

// The first turn after a sleep arms no alarm and checks the quota by clock:
// it must preempt all the same.
TEST_CASE("maybe_yield preempts in the first turn after the shard slept") {
    reactor_config config;
    config.task_quota = std::chrono::microseconds(200);
    percore::testing::run_in_shards(
        1,
        [] {
            for (int round = 0; round < 3; ++round) {
                sleep_for(std::chrono::milliseconds(2));  // the shard sleeps in the ring
                REQUIRE(reactor::local().stats().sleeps > 0);
                require_maybe_yield_lets_another_run();
            }
        },
        config);
}

TEST_CASE("a dropped future's exception is logged, not lost, and does not crash") {
    run_in_reactor([] {
        {
            spawn({.name = "careless"},
                  []() -> void { throw std::runtime_error("nobody listens"); });
        }
        yield();
        yield();
        SUCCEED();
    });
}

TEST_CASE("fibers still waiting at shutdown are unwound") {
    static int unwound = 0;
    unwound = 0;
    run_in_reactor([] {
        struct counter {
            ~counter() { ++unwound; }
        };
        for (int i = 0; i < 10; ++i) {
            spawn([] {
                counter c;
                sleep_for(std::chrono::hours(1));
            });
        }
        yield();
    });
    REQUIRE(unwound == 10);
}

TEST_CASE("yield outside a fiber is a clear error") {
    REQUIRE_THROWS_AS(yield(), std::logic_error);
}

TEST_CASE("a fiber looping on yield() does not starve I/O completions or timers") {
    run_in_reactor([] {
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        char byte = 0;
        bool read_done = false;
        auto reader = spawn([&] {
            int n =
                submit_io([&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fds[0], &byte, 1, 0); });
            read_done = n == 1;
        });
        bool timer_done = false;
        auto sleeper = spawn([&] {
            sleep_for(std::chrono::milliseconds(1));
            timer_done = true;
        });
        yield();
        REQUIRE(::write(fds[1], "x", 1) == 1);
        // A lone busy fiber: only yield(), no sleep. The reactor must still
        // get its turn to reap the read's completion and fire the timer.
        auto deadline = clock::now() + std::chrono::seconds(10);
        while ((!read_done || !timer_done) && clock::now() < deadline) yield();
        REQUIRE(read_done);
        REQUIRE(timer_done);
        reader.get();
        sleeper.get();
        ::close(fds[0]);
        ::close(fds[1]);
    });
}

TEST_CASE("two fibers yielding to each other do not starve I/O either") {
    run_in_reactor([] {
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        char byte = 0;
        bool read_done = false;
        auto reader = spawn([&] {
            read_done = submit_io([&](io_uring_sqe* sqe) {
                            io_uring_prep_read(sqe, fds[0], &byte, 1, 0);
                        }) == 1;
        });
        yield();
        REQUIRE(::write(fds[1], "x", 1) == 1);
        auto deadline = clock::now() + std::chrono::seconds(10);
        auto spinner = spawn([&] {
            while (!read_done && clock::now() < deadline) yield();
        });
        while (!read_done && clock::now() < deadline) yield();
        spinner.get();
        REQUIRE(read_done);
        reader.get();
        ::close(fds[0]);
        ::close(fds[1]);
    });
}

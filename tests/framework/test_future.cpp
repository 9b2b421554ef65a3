#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "percore/fiber.hpp"
#include "percore/future.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_reactor;

TEST_CASE("a promise fulfilled later wakes the fiber waiting in get()") {
    run_in_reactor([] {
        promise<int> p;
        auto f = p.get_future();
        auto producer = spawn([&] {
            sleep_for(std::chrono::milliseconds(2));
            p.set_value(7);
        });
        REQUIRE_FALSE(f.available());
        REQUIRE(f.get() == 7);
        REQUIRE_FALSE(f.valid());
        producer.get();
    });
}

TEST_CASE("exceptions travel from promise to future") {
    run_in_reactor([] {
        promise<void> p;
        auto f = p.get_future();
        p.set_exception(std::make_exception_ptr(std::runtime_error("nope")));
        REQUIRE(f.available());
        REQUIRE_THROWS_WITH(f.get(), "nope");
    });
}

TEST_CASE("a promise destroyed without a value gives broken_promise") {
    run_in_reactor([] {
        future<int> f;
        {
            promise<int> p;
            f = p.get_future();
        }
        REQUIRE_THROWS_AS(f.get(), broken_promise);
    });
}

// Once leaked the shared state (the future's share was never released): seen
// by LeakSanitizer in the sanitized build (scripts/test --sanitize).
TEST_CASE("a promise whose future is never taken frees its state") {
    run_in_reactor([] {
        { promise<int> dropped; }
        promise<std::string> fulfilled;
        fulfilled.set_value(std::string(100, 'x'));  // longer than the small string buffer
        promise<void> moved_over;
        moved_over = promise<void>();
        REQUIRE(moved_over.has_waiter());
    });
}

TEST_CASE("get with a deadline throws timeout_error and the late value is harmless") {
    run_in_reactor([] {
        promise<int> p;
        auto f = p.get_future();
        auto start = clock::now();
        REQUIRE_THROWS_AS(f.get_for(std::chrono::milliseconds(5)), timeout_error);
        REQUIRE(clock::now() - start >= std::chrono::milliseconds(5));
        p.set_value(1);  // nobody waits any more: must not wake anything
        sleep_for(std::chrono::milliseconds(1));
    });
}

TEST_CASE("get with a deadline returns the value when it arrives first") {
    run_in_reactor([] {
        promise<std::string> p;
        auto f = p.get_future();
        auto producer = spawn([&] {
            sleep_for(std::chrono::milliseconds(1));
            p.set_value("in time");
        });
        REQUIRE(f.get_for(std::chrono::seconds(10)) == "in time");
        producer.get();
    });
}

TEST_CASE("when_all waits for every future and keeps their order") {
    run_in_reactor([] {
        std::vector<future<int>> futures;
        for (int i = 0; i < 50; ++i) {
            futures.push_back(spawn([i] {
                sleep_for(std::chrono::microseconds((50 - i) * 20));
                return i;
            }));
        }
        auto values = when_all(futures);
        REQUIRE(values.size() == 50);
        for (int i = 0; i < 50; ++i) REQUIRE(values[i] == i);

        auto a = spawn([] { return 1; });
        auto b = spawn([] { return std::string("two"); });
        auto c = spawn([] {});
        auto [one, two, unit] = when_all(a, b, c);
        REQUIRE(one == 1);
        REQUIRE(two == "two");
        (void)unit;
    });
}

TEST_CASE("when_all rethrows the first failure after all finished") {
    run_in_reactor([] {
        int finished = 0;
        std::vector<future<void>> futures;
        futures.push_back(spawn([&] { throw std::runtime_error("first"); }));
        futures.push_back(spawn([&] {
            sleep_for(std::chrono::milliseconds(2));
            ++finished;
        }));
        futures.push_back(spawn([&] { throw std::runtime_error("second"); }));
        REQUIRE_THROWS_WITH(when_all(futures), "first");
        REQUIRE(finished == 1);
    });
}

TEST_CASE("make_ready_future and make_exception_future") {
    run_in_reactor([] {
        REQUIRE(make_ready_future<int>(5).get() == 5);
        auto f = make_exception_future<int>(std::make_exception_ptr(std::logic_error("bad")));
        REQUIRE_THROWS_AS(f.get(), std::logic_error);
    });
}

TEST_CASE("get on a consumed future is a clear error") {
    run_in_reactor([] {
        auto f = make_ready_future<int>(1);
        f.get();
        REQUIRE_THROWS_AS(f.get(), std::logic_error);
    });
}

TEST_CASE("a reactor thread reuses the blocks of freed future states") {
    run_in_reactor([] {
        auto& cache = detail::local_block_cache;
        if (!cache.is_open()) {
            WARN("block cache off (AddressSanitizer build)");
            return;
        }
        constexpr std::size_t state_size = sizeof(detail::future_state<int>);
        std::size_t kept_before = cache.kept(state_size);
        {
            promise<int> p;
            auto f = p.get_future();
            p.set_value(3);
            REQUIRE(f.get() == 3);
        }
        // The released state's block waits in the cache for the next state.
        REQUIRE(cache.kept(state_size) == kept_before + 1);
        void* block = cache.allocate(state_size);
        REQUIRE(cache.kept(state_size) == kept_before);
        cache.free(block, state_size);
        // Same size class: the block just freed comes back.
        REQUIRE(cache.allocate(state_size) == block);
        cache.free(block, state_size);
    });
}

TEST_CASE("the block cache is bounded, skips big blocks and is off without a reactor") {
    using detail::block_cache;
    auto& cache = detail::local_block_cache;
    void* outside = cache.allocate(16);
    cache.free(outside, 16);
    REQUIRE(cache.kept(16) == 0);  // no reactor on this thread
    run_in_reactor([] {
        auto& c = detail::local_block_cache;
        if (!c.is_open()) {
            WARN("block cache off (AddressSanitizer build)");
            return;
        }
        std::vector<void*> blocks;
        for (unsigned i = 0; i < block_cache::kept_per_class + 10; ++i)
            blocks.push_back(c.allocate(100));
        for (void* p : blocks) c.free(p, 100);
        REQUIRE(c.kept(100) == block_cache::kept_per_class);
        constexpr std::size_t big = block_cache::classes * block_cache::class_bytes + 1;
        c.free(c.allocate(big), big);
        REQUIRE(c.kept(big) == 0);
    });
}

#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <vector>

#include "percore/fiber.hpp"
#include "percore/reactor.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_reactor;

TEST_CASE("sleep_for waits at least the requested time") {
    run_in_reactor([] {
        for (auto d : {std::chrono::microseconds(50), std::chrono::microseconds(2000)}) {
            auto start = clock::now();
            sleep_for(d);
            REQUIRE(clock::now() - start >= d);
        }
    });
}

TEST_CASE("timers fire in deadline order, whatever the arming order") {
    run_in_reactor([] {
        std::vector<int> fired;
        std::vector<std::unique_ptr<timer>> timers;
        promise<void> done;
        auto all = done.get_future();
        int order[] = {5, 1, 4, 2, 3, 0};
        auto base = clock::now() + std::chrono::milliseconds(2);
        for (int i : order) {
            timers.push_back(std::make_unique<timer>([i, &fired, &done] {
                fired.push_back(i);
                if (fired.size() == 6) done.set_value();
            }));
            timers.back()->arm(base + std::chrono::microseconds(200 * i));
        }
        all.get();
        REQUIRE(fired == std::vector<int>{0, 1, 2, 3, 4, 5});
    });
}

TEST_CASE("a cancelled timer never fires; re-arming moves it") {
    run_in_reactor([] {
        int fired = 0;
        timer t([&] { ++fired; });
        t.arm(std::chrono::milliseconds(1));
        REQUIRE(t.armed());
        REQUIRE(t.cancel());
        REQUIRE_FALSE(t.armed());
        REQUIRE_FALSE(t.cancel());
        sleep_for(std::chrono::milliseconds(3));
        REQUIRE(fired == 0);

        t.arm(std::chrono::hours(1));
        t.arm(std::chrono::milliseconds(1));
        sleep_for(std::chrono::milliseconds(3));
        REQUIRE(fired == 1);
    });
}

TEST_CASE("a periodic timer keeps firing until cancelled") {
    run_in_reactor([] {
        int fired = 0;
        timer t([&] { ++fired; });
        t.arm_periodic(std::chrono::milliseconds(1));
        while (fired < 5) sleep_for(std::chrono::milliseconds(1));
        t.cancel();
        int seen = fired;
        sleep_for(std::chrono::milliseconds(5));
        REQUIRE(fired == seen);
    });
}

TEST_CASE("a destroyed timer is removed from the shard's heap") {
    run_in_reactor([] {
        int fired = 0;
        {
            timer t([&] { ++fired; });
            t.arm(std::chrono::milliseconds(1));
        }
        sleep_for(std::chrono::milliseconds(3));
        REQUIRE(fired == 0);
    });
}

TEST_CASE("many sleeping fibers wake in deadline order") {
    run_in_reactor([] {
        std::vector<int> woke;
        std::vector<future<void>> fibers;
        for (int i = 20; i > 0; --i) {
            fibers.push_back(spawn([i, &woke] {
                sleep_for(std::chrono::microseconds(300 * i));
                woke.push_back(i);
            }));
        }
        for (auto& f : fibers) f.get();
        REQUIRE(std::is_sorted(woke.begin(), woke.end()));
        REQUIRE(woke.size() == 20);
    });
}

TEST_CASE("the reactor sleeps while waiting for a timer instead of spinning") {
    run_in_reactor([] {
        auto before = reactor::local().stats();
        sleep_for(std::chrono::milliseconds(20));
        auto after = reactor::local().stats();
        REQUIRE(after.sleeps > before.sleeps);
        REQUIRE(after.loop_turns - before.loop_turns < 100);
    });
}

#include <catch2/catch.hpp>

#include <mutex>
#include <vector>

#include "percore/fiber.hpp"
#include "percore/sync.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_reactor;

TEST_CASE("mutex excludes across suspension points and is FIFO fair") {
    run_in_reactor([] {
        mutex m;
        int inside = 0;
        int max_inside = 0;
        std::vector<int> order;
        std::vector<future<void>> fibers;
        for (int i = 0; i < 10; ++i) {
            fibers.push_back(spawn([&, i] {
                std::lock_guard lock(m);
                order.push_back(i);
                max_inside = std::max(max_inside, ++inside);
                sleep_for(std::chrono::microseconds(100));
                --inside;
            }));
        }
        for (auto& f : fibers) f.get();
        REQUIRE(max_inside == 1);
        REQUIRE(order == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    });
}

TEST_CASE("try_lock_until gives up at the deadline") {
    run_in_reactor([] {
        mutex m;
        m.lock();
        REQUIRE_FALSE(m.try_lock());
        REQUIRE_FALSE(m.try_lock_until(clock::now() + std::chrono::milliseconds(2)));
        m.unlock();
        REQUIRE(m.try_lock());
        m.unlock();
    });
}

TEST_CASE("condition_variable: notify_one, notify_all, wait with predicate and timeout") {
    run_in_reactor([] {
        mutex m;
        condition_variable cv;
        int ready = 0;
        int woken = 0;
        std::vector<future<void>> waiters;
        for (int i = 0; i < 5; ++i) {
            waiters.push_back(spawn([&] {
                std::unique_lock lock(m);
                cv.wait(lock, [&] { return ready > 0; });
                ++woken;
            }));
        }
        yield();
        REQUIRE(woken == 0);
        {
            std::unique_lock lock(m);
            ready = 1;
        }
        cv.notify_all();
        for (auto& w : waiters) w.get();
        REQUIRE(woken == 5);

        std::unique_lock lock(m);
        REQUIRE(cv.wait_for(lock, std::chrono::milliseconds(2)) == cv_status::timeout);
        REQUIRE(lock.owns_lock());
    });
}

TEST_CASE("semaphore hands out units in FIFO order and honours deadlines") {
    run_in_reactor([] {
        semaphore sem(2);
        std::vector<int> order;
        REQUIRE(sem.try_wait(2));
        REQUIRE_FALSE(sem.try_wait());
        auto big = spawn([&] {
            sem.wait(2);
            order.push_back(2);
        });
        auto small = spawn([&] {
            sem.wait(1);
            order.push_back(1);
        });
        yield();
        sem.signal(1);  // not enough for the head (2): the small one must not overtake
        yield();
        REQUIRE(order.empty());
        sem.signal(2);
        big.get();
        small.get();
        REQUIRE(order == std::vector<int>{2, 1});
        REQUIRE(sem.available() == 0);
        REQUIRE_FALSE(sem.wait_for(std::chrono::milliseconds(2)));
        REQUIRE_FALSE(sem.has_waiters());
    });
}

TEST_CASE("a semaphore waiter that times out at the head unblocks smaller waiters") {
    run_in_reactor([] {
        semaphore sem(1);
        bool small_got = false;
        auto big = spawn([&] { return sem.wait_for(std::chrono::milliseconds(3), 5); });
        auto small = spawn([&] {
            sem.wait(1);
            small_got = true;
        });
        REQUIRE_FALSE(big.get());
        small.get();
        REQUIRE(small_got);
    });
}

TEST_CASE("gate: close waits for holders and refuses newcomers") {
    run_in_reactor([] {
        gate g;
        int finished = 0;
        std::vector<future<void>> workers;
        for (int i = 0; i < 5; ++i) {
            workers.push_back(spawn([&, i] {
                gate::holder h(g);
                sleep_for(std::chrono::microseconds(200 * (i + 1)));
                ++finished;
            }));
        }
        yield();
        REQUIRE(g.count() == 5);
        g.close();
        REQUIRE(finished == 5);
        REQUIRE(g.is_closed());
        REQUIRE_THROWS_AS(g.enter(), gate_closed_error);
        for (auto& w : workers) w.get();
    });
}

TEST_CASE("fibers blocked on sync primitives unwind at shutdown") {
    static int unwound = 0;
    unwound = 0;
    static mutex m;
    static semaphore sem(0);
    run_in_reactor([] {
        struct counter {
            ~counter() { ++unwound; }
        };
        m.lock();
        spawn([] {
            counter c;
            std::lock_guard lock(m);
        });
        spawn([] {
            counter c;
            sem.wait();
        });
        yield();
    });
    REQUIRE(unwound == 2);
}

// The SPSC ring on its own, then submit_to / invoke_on_all across real shards
// (2, 4 and 8: more shards than CPUs run unpinned, as --overprovisioned does).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "percore/spsc_queue.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_shards;
using namespace std::chrono_literals;

namespace {

// Counts live instances so the tests see what the ring constructs and destroys.
struct counted {
    static inline int live = 0;
    int value;
    explicit counted(int v) : value(v) { ++live; }
    counted(const counted& o) : value(o.value) { ++live; }
    ~counted() { --live; }
};

// Generous bound for waits that must not hang the suite if a wake-up is lost;
// never a latency assertion.
constexpr auto hang_guard = 20s;

}  // namespace

TEST_CASE("spsc_queue: staged elements are invisible until published") {
    spsc_queue<int> q(3);
    REQUIRE(q.capacity() == 4);
    REQUIRE(q.try_stage(1));
    REQUIRE(q.try_stage(2));
    REQUIRE(q.staged() == 2);
    REQUIRE(q.front() == nullptr);
    REQUIRE_FALSE(q.has_published());
    REQUIRE(q.publish() == 2);
    REQUIRE(q.has_published());
    REQUIRE(*q.front() == 1);
    q.pop();
    REQUIRE(*q.front() == 2);
    q.pop();
    REQUIRE(q.front() == nullptr);
    REQUIRE(q.release() == 2);
}

TEST_CASE("spsc_queue: full until the consumer releases slots") {
    spsc_queue<int> q(4);
    for (int i = 0; i < 4; ++i) REQUIRE(q.try_push(i));
    REQUIRE_FALSE(q.try_push(99));
    REQUIRE(*q.front() == 0);
    q.pop();
    // Popped but not released: the producer still sees the slot taken.
    REQUIRE_FALSE(q.try_push(99));
    q.release();
    REQUIRE(q.try_push(4));
    std::vector<int> seen;
    q.consume([&](int& v) { seen.push_back(v); });
    REQUIRE(seen == std::vector<int>{1, 2, 3, 4});
    REQUIRE(q.free_space() == 4);
}

TEST_CASE("spsc_queue: destroys what is left, published or staged") {
    counted::live = 0;
    {
        spsc_queue<counted> q(8);
        q.try_push(1);
        q.try_push(2);
        q.try_stage(3);
        REQUIRE(counted::live == 3);
        q.consume([](counted&) {}, 1);
        REQUIRE(counted::live == 2);
    }
    REQUIRE(counted::live == 0);
}

TEST_CASE("spsc_queue: two threads, a million elements, in order, none lost") {
    constexpr std::size_t n = 1'000'000;
    spsc_queue<std::size_t> q(256);
    std::thread producer([&] {
        for (std::size_t i = 0; i < n;) {
            // Stage in runs, publish per run: the batched mode smp.cpp uses.
            while (i < n && q.try_stage(i)) ++i;
            q.publish();
            if (i < n) std::this_thread::yield();
        }
    });
    std::size_t expected = 0;
    bool in_order = true;
    while (expected < n) {
        std::size_t got = q.consume([&](std::size_t& v) {
            if (v != expected) in_order = false;
            ++expected;
        });
        if (got == 0) std::this_thread::yield();
    }
    producer.join();
    REQUIRE(in_order);
    REQUIRE(expected == n);
    REQUIRE(q.front() == nullptr);
}

TEST_CASE("submit_to runs on the target shard and returns its value") {
    run_in_shards(2, [] {
        auto main_thread = std::this_thread::get_id();
        auto on_one = submit_to(
            1, [] { return std::make_pair(this_shard_id(), std::this_thread::get_id()); });
        auto [shard, thread] = on_one.get();
        REQUIRE(shard == 1);
        REQUIRE(thread != main_thread);

        // A void call, a move-only capture, a same-shard call (just a spawn).
        int touched = 0;
        submit_to(1, [p = std::make_unique<int>(5), &touched] { touched = *p; }).get();
        REQUIRE(touched == 5);
        auto self = submit_to(0, [] { return std::this_thread::get_id(); });
        REQUIRE(self.get() == main_thread);
        REQUIRE(submit_to(1, [] { return std::string(300, 'x'); }).get().size() == 300);
    });
}

TEST_CASE("submit_to with a bad shard id is an error, not a crash") {
    run_in_shards(2, [] {
        REQUIRE_THROWS_AS(submit_to(2, [] {}), std::out_of_range);
        REQUIRE_THROWS_WITH(submit_to(7, [] {}), Catch::Contains("no shard 7"));
    });
}

TEST_CASE("exceptions cross shards with their type and message") {
    run_in_shards(2, [] {
        auto f = submit_to(1, []() -> int {
            throw std::runtime_error("boom on shard " + std::to_string(this_shard_id()));
        });
        REQUIRE_THROWS_WITH(f.get(), "boom on shard 1");
        try {
            submit_to(1, [] { throw io_error(ENOENT, "opening /nonexistent"); }).get();
            FAIL("no exception");
        } catch (const io_error& e) {
            REQUIRE(e.error_number() == ENOENT);
        }
        // The shard keeps serving after a failed call.
        REQUIRE(submit_to(1, [] { return 7; }).get() == 7);
    });
}

TEST_CASE("the called function may suspend: timers and nested submit_to (A -> B -> A)") {
    run_in_shards(2, [] {
        auto main_thread = std::this_thread::get_id();
        auto nested = submit_to(1, [main_thread] {
            sleep_for(1ms);
            auto back = submit_to(0, [main_thread] {
                yield();
                return std::this_thread::get_id() == main_thread ? 100 : -1;
            });
            return back.get() + static_cast<int>(this_shard_id());
        });
        REQUIRE(nested.get(clock::now() + hang_guard) == 101);
    });
}

TEST_CASE("messages between each pair of shards arrive in order", "[smp]") {
    for (unsigned smp : {2u, 4u, 8u}) {
        DYNAMIC_SECTION(smp << " shards") {
            // seen[target][source]: written only on the target's shard, read on
            // shard 0 after every call returned (the replies order the reads).
            std::vector<std::vector<std::vector<int>>> seen(smp,
                                                            std::vector<std::vector<int>>(smp));
            constexpr int per_pair = 2000;
            run_in_shards(smp, [&] {
                invoke_on_all([&] {
                    unsigned self = this_shard_id();
                    std::vector<future<void>> calls;
                    for (int i = 0; i < per_pair; ++i) {
                        for (unsigned to = 0; to < smp; ++to) {
                            if (to == self) continue;
                            calls.push_back(submit_to(
                                to, [&seen, to, self, i] { seen[to][self].push_back(i); }));
                        }
                    }
                    when_all(calls);
                });
            });
            for (unsigned to = 0; to < smp; ++to) {
                for (unsigned from = 0; from < smp; ++from) {
                    if (from == to) continue;
                    auto& v = seen[to][from];
                    REQUIRE(v.size() == per_pair);
                    bool in_order = true;
                    for (int i = 0; i < per_pair; ++i) in_order = in_order && v[i] == i;
                    CHECK(in_order);
                }
            }
        }
    }
}

TEST_CASE("a slow consumer with 100 000 calls in flight: back-pressure, none lost") {
    run_in_shards(2, [] {
        constexpr int n = 100'000;
        int next_expected = 0;  // touched on shard 1 only
        bool in_order = true;
        std::uint64_t waits_before = reactor::local().stats().smp_ring_full_waits;
        std::vector<future<int>> calls;
        calls.reserve(n);
        for (int i = 0; i < n; ++i) {
            calls.push_back(submit_to(1, [i, &next_expected, &in_order] {
                if (i != next_expected) in_order = false;
                ++next_expected;
                // The consumer is slower than the producer: it naps now and then.
                if (i % 5000 == 0) sleep_for(1ms);
                return i;
            }));
        }
        long long sum = 0;
        for (auto& c : calls) sum += c.get(clock::now() + hang_guard);
        REQUIRE(sum == static_cast<long long>(n) * (n - 1) / 2);
        REQUIRE(submit_to(1, [&] { return next_expected; }).get() == n);
        REQUIRE(submit_to(1, [&] { return in_order; }).get());
        // The producer outran the credits toward shard 1 and had to wait.
        REQUIRE(reactor::local().stats().smp_ring_full_waits > waits_before);
        auto [sent, received] = submit_to(1, [] {
                                    auto& s = reactor::local().stats();
                                    return std::pair{s.smp_messages_sent, s.smp_messages_received};
                                }).get();
        REQUIRE(received >= static_cast<std::uint64_t>(n));
        REQUIRE(sent >= static_cast<std::uint64_t>(n));
    });
}

TEST_CASE("a shard asleep in io_uring is woken by a submit_to") {
    run_in_shards(2, [] {
        auto stats_of_one = [] {
            return submit_to(1,
                             [] {
                                 auto& s = reactor::local().stats();
                                 return std::pair{s.sleeps, s.wakeups_received};
                             })
                .get(clock::now() + hang_guard);
        };
        auto before = stats_of_one();
        // Shard 1 has nothing to do meanwhile: it goes to sleep in its ring.
        const time_point give_up = clock::now() + hang_guard;
        while (!reactor::of_shard(1).sleeping() && clock::now() < give_up) yield();
        REQUIRE(reactor::of_shard(1).sleeping());
        auto after = stats_of_one();
        REQUIRE(after.first > before.first);
        REQUIRE(after.second > before.second);
    });
}

TEST_CASE("invoke_on_all runs once on every shard and waits for all") {
    for (unsigned smp : {2u, 4u, 8u}) {
        DYNAMIC_SECTION(smp << " shards") {
            run_in_shards(smp, [smp] {
                auto ids = invoke_on_all([] { return this_shard_id(); });
                REQUIRE(ids.size() == smp);
                for (unsigned s = 0; s < smp; ++s) REQUIRE(ids[s] == s);

                // Every shard calls every shard: a full mesh of nested calls.
                auto sums = invoke_on_all([smp] {
                    auto inner = invoke_on_all([] { return this_shard_id() + 1; });
                    unsigned sum = 0;
                    for (auto v : inner) sum += v;
                    return sum;
                });
                for (auto sum : sums) REQUIRE(sum == smp * (smp + 1) / 2);

                std::atomic<int> ran{0};
                invoke_on_all([&ran] { ran.fetch_add(1); });
                REQUIRE(ran.load() == static_cast<int>(smp));

                REQUIRE_THROWS_WITH(invoke_on_all([] {
                                        if (this_shard_id() == 1)
                                            throw std::runtime_error("shard 1 failed");
                                    }),
                                    "shard 1 failed");
            });
        }
    }
}

TEST_CASE("stopping with calls still in flight neither hangs nor crashes") {
    std::atomic<int> started{0};
    const auto begun = clock::now();
    run_in_shards(2, [&] {
        // Dropped futures: fire-and-forget calls, some still sleeping on
        // shard 1 when main returns and the shards stop, some never started.
        // Fewer than the per-pair credit limit, so submitting never waits
        // for one of these ten-second calls to finish.
        for (int i = 0; i < 100; ++i) {
            (void)submit_to(1, [&started] {
                started.fetch_add(1);
                sleep_for(10s);
            });
        }
        // Also a caller still waiting for a reply at shutdown.
        (void)spawn([] { submit_to(1, [] { sleep_for(10s); }).get(); });
        // Some calls must really be in flight (sleeping on shard 1) when
        // main returns, or the test would check an idle shutdown.
        const auto deadline = clock::now() + hang_guard;
        while (started.load() == 0 && clock::now() < deadline) yield();
    });
    const auto stopped = clock::now();
    CHECK(started.load() > 0);
    // The shutdown did not wait for the ten-second calls (generous bound:
    // the run takes milliseconds).
    CHECK(stopped - begun < 5s);
    // The next run starts from a clean mesh.
    run_in_shards(2, [] { REQUIRE(submit_to(1, [] { return 5; }).get() == 5); });
}

// Both ways at once with many callers (kv's pattern: connections on every
// shard forwarding batches to the other): a ring carries requests one way and
// replies the other, so a reply must never give a credit back before the
// request's slot is free again, or a caller finds the ring full.
TEST_CASE("many callers both ways: a returned credit always finds a ring slot", "[smp]") {
    run_in_shards(2, [] {
        invoke_on_all([] {
            const unsigned other = 1 - this_shard_id();
            std::vector<future<void>> callers;
            for (int c = 0; c < 64; ++c) {
                callers.push_back(spawn({.name = "caller"}, [other] {
                    std::vector<future<int>> batch;
                    for (int round = 0; round < 100; ++round) {
                        batch.clear();
                        for (int i = 0; i < 16; ++i)
                            batch.push_back(submit_to(other, [i] { return i; }));
                        int sum = 0;
                        for (auto& f : batch) sum += f.get(clock::now() + hang_guard);
                        REQUIRE(sum == 120);
                    }
                }));
            }
            for (auto& c : callers) c.get();
        });
    });
}

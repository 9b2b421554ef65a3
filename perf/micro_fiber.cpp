// Fiber and timer costs, measured inside a real reactor.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <memory>
#include <new>
#include <vector>

#include "percore/fiber.hpp"
#include "percore/timer.hpp"

using namespace percore;

// Two fibers yield to each other; time per switch (each yield is one switch
// away from the yielding fiber).
static void fiber_switch(benchmark::State& state) {
    bool done = false;
    std::int64_t switches = 0;
    auto partner = spawn([&] {
        while (!done) {
            ++switches;
            yield();
        }
    });
    for (auto _ : state) yield();
    done = true;
    yield();
    partner.get();
    // Every iteration is two switches: to the partner and back.
    state.SetItemsProcessed(state.iterations() * 2);
    state.counters["ns_per_switch"] =
        benchmark::Counter(static_cast<double>(state.iterations() * 2),
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    benchmark::DoNotOptimize(switches);
}
BENCHMARK(fiber_switch);

// Spawn an empty fiber and wait for it.
static void fiber_spawn_join(benchmark::State& state) {
    for (auto _ : state) spawn([] {}).get();
}
BENCHMARK(fiber_spawn_join);

// Arm a timer and cancel it with 1000 other timers armed. `later` arms a
// deadline after all the others (the common case: timeouts are pushed
// forward as time passes); `earliest` one before all of them (the heap's
// worst case: it sifts to the root and back).
static void timer_arm_cancel_with(benchmark::State& state, bool earliest) {
    std::vector<std::unique_ptr<timer>> others;
    for (int i = 0; i < 1000; ++i) {
        others.push_back(std::make_unique<timer>([] {}));
        others.back()->arm(std::chrono::seconds(60) + std::chrono::milliseconds(i));
    }
    timer t([] {});
    auto delay = earliest ? std::chrono::seconds(30) : std::chrono::seconds(120);
    for (auto _ : state) {
        t.arm(delay);
        t.cancel();
    }
}
static void timer_arm_cancel(benchmark::State& state) {
    timer_arm_cancel_with(state, false);
}
static void timer_arm_cancel_earliest(benchmark::State& state) {
    timer_arm_cancel_with(state, true);
}
BENCHMARK(timer_arm_cancel);
BENCHMARK(timer_arm_cancel_earliest);

// 1 000 connections' read deadlines: each timer in its own 16 KiB block (as
// on its fiber's stack, so out of the caches by its turn), cancelled and
// re-armed later round robin, as each read completes and the next one starts.
static void timer_rearm_cold(benchmark::State& state) {
    constexpr std::size_t count = 1000, spacing = 16 * 1024;
    std::vector<std::unique_ptr<std::byte[]>> blocks;
    std::vector<timer*> timers;
    for (std::size_t i = 0; i < count; ++i) {
        blocks.push_back(std::make_unique<std::byte[]>(spacing));
        timers.push_back(new (blocks.back().get()) timer([] {}));
        timers.back()->arm(std::chrono::seconds(300) + std::chrono::microseconds(i));
    }
    std::size_t next = 0;
    auto delay = std::chrono::seconds(300);
    for (auto _ : state) {
        timer* t = timers[next];
        t->cancel();
        t->arm(delay);
        next = next + 1 == count ? 0 : next + 1;
    }
    for (timer* t : timers) t->~timer();
}
BENCHMARK(timer_rearm_cold);

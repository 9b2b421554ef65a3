// Fiber and timer costs, measured inside a real reactor.
#include <benchmark/benchmark.h>

#include <boost/context/detail/fcontext.hpp>

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

// --- bare baselines for fiber_switch (same process, same run) ---------------
// A host's context-switch cost moves 2x between VMs (17.5-21 ns in November,
// 32-40 ns in December on the same code), so fiber_switch is judged as a
// ratio to these: a pair of raw Boost fcontext jumps, and the least a
// yield between two contexts can add to them (a ready queue of two).

namespace bare {
using boost::context::detail::fcontext_t;
using boost::context::detail::jump_fcontext;
using boost::context::detail::make_fcontext;
using boost::context::detail::transfer_t;

constexpr std::size_t stack_size = 64 * 1024;

// Jumps straight back to whoever jumped here, forever.
void bounce(transfer_t t) {
    for (;;) t = jump_fcontext(t.fctx, nullptr);
}

// Two contexts taking turns through a ready queue: each yield stores the
// yielder's context in its slot and jumps to the other slot's.
struct pair_scheduler {
    fcontext_t slots[2] = {};
    unsigned running = 0;
    bool stop = false;

    void yield() {
        const unsigned next = running ^ 1;
        running = next;
        transfer_t t = jump_fcontext(slots[next], &slots[next ^ 1]);
        *static_cast<fcontext_t*>(t.data) = t.fctx;
    }
};

void partner_entry(transfer_t t) {
    auto* s = static_cast<pair_scheduler*>(t.data);
    s->slots[0] = t.fctx;  // the benchmark's context, suspended in its first jump
    while (!s->stop) s->yield();
    s->running = 0;
    jump_fcontext(s->slots[0], &s->slots[1]);  // never resumed
}
}  // namespace bare

// Two raw jumps (there and back) per iteration: the floor of any switch.
static void fcontext_jump_pair(benchmark::State& state) {
    auto stack = std::make_unique<char[]>(bare::stack_size);
    bare::fcontext_t ctx =
        bare::make_fcontext(stack.get() + bare::stack_size, bare::stack_size, &bare::bounce);
    bare::transfer_t t = bare::jump_fcontext(ctx, nullptr);
    for (auto _ : state) t = bare::jump_fcontext(t.fctx, nullptr);
    state.SetItemsProcessed(state.iterations() * 2);
    state.counters["ns_per_switch"] =
        benchmark::Counter(static_cast<double>(state.iterations() * 2),
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(fcontext_jump_pair);

// fiber_switch's shape (two contexts yielding to each other) with nothing
// but a two-slot ready queue around the jumps.
static void minimal_yield(benchmark::State& state) {
    auto stack = std::make_unique<char[]>(bare::stack_size);
    bare::pair_scheduler s;
    s.slots[1] =
        bare::make_fcontext(stack.get() + bare::stack_size, bare::stack_size, &bare::partner_entry);
    s.running = 1;
    bare::transfer_t t = bare::jump_fcontext(s.slots[1], &s);  // starts the partner
    *static_cast<bare::fcontext_t*>(t.data) = t.fctx;
    s.running = 0;
    for (auto _ : state) s.yield();
    s.stop = true;
    s.yield();  // the partner sees stop and parks for good
    state.SetItemsProcessed(state.iterations() * 2);
    state.counters["ns_per_switch"] =
        benchmark::Counter(static_cast<double>(state.iterations() * 2),
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(minimal_yield);

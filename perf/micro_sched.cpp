// The scheduler's cost per fiber switch with several task queues active.
//   build/perf/micro --benchmark_filter='queue_'
#include <benchmark/benchmark.h>

#include <string>
#include <utility>
#include <vector>

#include "percore/fiber.hpp"
#include "percore/scheduling.hpp"

using namespace percore;

namespace {

// Queues live as long as their shard: benchmark runs reuse them.
task_queue& bench_queue(std::size_t i) {
    static std::vector<task_queue*> pool;
    while (pool.size() <= i) {
        pool.push_back(&create_task_queue(1000, latency::not_important(),
                                          "bench-" + std::to_string(pool.size())));
    }
    return *pool[i];
}

}  // namespace

// N queues active (the default queue and N - 1 others), two fibers yielding
// to each other in each: queues take turns by shares at each quota. Time per
// switch, over all fibers' switches.
static void queue_switch(benchmark::State& state) {
    auto queues = static_cast<std::size_t>(state.range(0));
    bool done = false;
    std::uint64_t switches = 0;
    std::vector<future<void>> fibers;
    auto body = [&] {
        while (!done) {
            ++switches;
            yield();
        }
    };
    fibers.push_back(spawn(body));  // the benchmark fiber's partner in the default queue
    for (std::size_t q = 1; q < queues; ++q) {
        for (int i = 0; i < 2; ++i) fibers.push_back(spawn_into(bench_queue(q - 1), body));
    }
    for (auto _ : state) {
        ++switches;
        yield();
    }
    done = true;
    for (auto& f : fibers) f.get();
    state.counters["ns_per_switch"] = benchmark::Counter(
        static_cast<double>(switches), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(queue_switch)->Arg(1)->Arg(8)->Arg(64);

// The worst case: a token passed around a ring of 64 fibers spread over N
// queues, so that with N = 64 every switch leaves an emptied queue for
// another (clock read, charge, pick by vruntime).
static void queue_handoff(benchmark::State& state) {
    auto queues = static_cast<std::size_t>(state.range(0));
    constexpr std::size_t ring = 64;
    bool done = false;
    std::uint64_t switches = 0;
    std::uint64_t target = 0;
    std::size_t registered = 0;
    detail::fiber_base* waiter = nullptr;  // the benchmark fiber, until target
    std::vector<detail::fiber_base*> members(ring, nullptr);
    std::vector<bool> finished(ring, false);
    std::vector<future<void>> fibers;
    for (std::size_t i = 0; i < ring; ++i) {
        auto member = [&, i] {
            members[i] = detail::current_fiber();
            ++registered;
            detail::suspend();
            while (!done) {
                if (++switches >= target && waiter)
                    detail::make_ready(std::exchange(waiter, nullptr));
                detail::make_ready(members[(i + 1) % ring]);
                detail::suspend();
            }
            finished[i] = true;
            if (!finished[(i + 1) % ring]) detail::make_ready(members[(i + 1) % ring]);
        };
        fibers.push_back(spawn_into(bench_queue(64 + i % queues), member));
    }
    while (registered < ring) yield();
    switches = 0;
    target = 1000;
    waiter = detail::current_fiber();
    detail::make_ready(members[0]);
    detail::suspend();
    for (auto _ : state) {
        target = switches + 1000;
        waiter = detail::current_fiber();
        detail::suspend();
    }
    done = true;
    for (auto& f : fibers) f.get();
    state.counters["ns_per_switch"] = benchmark::Counter(
        static_cast<double>(switches), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(queue_handoff)->Arg(1)->Arg(8)->Arg(64);

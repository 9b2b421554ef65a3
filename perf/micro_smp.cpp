// Cross-shard call costs: submit_to from shard 0 to shard 1 and back.
//   build/perf/micro --benchmark_filter=submit_to
// Needs two shards (the default with 2 allowed CPUs, pinned); skipped otherwise.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "percore/fiber.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "percore/timer.hpp"

using namespace percore;

namespace {

double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
}

}  // namespace

// One caller fiber, one call in flight: time per round trip. How the shards
// wait decides what this measures: with PERCORE_MICRO_IDLE_POLL_US set they
// busy-poll (no wake-up needed, counter polling=1); without, the caller
// pauses 200 µs between calls so both shards fall asleep in io_uring and
// every call wakes the target and every reply wakes the caller (polling=0).
static void submit_to_roundtrip(benchmark::State& state) {
    if (shard_count() < 2) {
        state.SkipWithError("needs 2 shards");
        return;
    }
    bool polling = reactor::local().config().idle_poll.count() > 0;
    std::vector<double> us;
    us.reserve(1 << 20);
    for (auto _ : state) {
        auto start = clock::now();
        submit_to(1, [] { return 1; }).get();
        auto end = clock::now();
        if (us.size() < us.capacity()) {
            us.push_back(std::chrono::duration<double, std::micro>(end - start).count());
        }
        if (!polling) {
            state.PauseTiming();
            sleep_for(std::chrono::microseconds(200));
            state.ResumeTiming();
        }
    }
    state.counters["polling"] = polling ? 1 : 0;
    state.counters["p50_us"] = percentile(us, 0.50);
    state.counters["p99_us"] = percentile(us, 0.99);
}
BENCHMARK(submit_to_roundtrip)->UseRealTime();

// The kernel's floor under submit_to_roundtrip's sleeping case: two plain
// threads (on shard 0's CPU and another) that each block in read() on an eventfd, woken by
// the other's write(), after the same 200 µs pause. No reactor, no ring.
// (This blocks the calling shard's thread on purpose: a benchmark only.)
static void thread_wake_roundtrip(benchmark::State& state) {
    int to_peer = eventfd(0, EFD_CLOEXEC);
    int to_caller = eventfd(0, EFD_CLOEXEC);
    if (to_peer < 0 || to_caller < 0) {
        state.SkipWithError("eventfd failed");
        return;
    }
    auto pin = [](int cpu) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu % static_cast<int>(std::thread::hardware_concurrency()), &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    };
    // The peer runs where shard 1 does: a wake-up across CPUs, as submit_to's
    // (on the caller's own CPU it would measure a context switch instead).
    const int peer_cpu = sched_getcpu() == 0 ? 1 : 0;
    std::thread peer([&] {
        pin(peer_cpu);
        std::uint64_t v = 0;
        while (read(to_peer, &v, sizeof v) == sizeof v && v != 2) {
            v = 1;
            if (write(to_caller, &v, sizeof v) != sizeof v) break;
        }
    });
    std::vector<double> us;
    us.reserve(1 << 16);
    for (auto _ : state) {
        state.PauseTiming();
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        state.ResumeTiming();
        auto start = std::chrono::steady_clock::now();
        std::uint64_t v = 1;
        if (write(to_peer, &v, sizeof v) != sizeof v || read(to_caller, &v, sizeof v) != sizeof v) {
            state.SkipWithError("eventfd read/write failed");
            break;
        }
        if (us.size() < us.capacity()) {
            us.push_back(
                std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                    .count());
        }
    }
    std::uint64_t stop = 2;
    if (write(to_peer, &stop, sizeof stop) != sizeof stop)
        state.SkipWithError("eventfd write failed");
    peer.join();
    close(to_peer);
    close(to_caller);
    state.counters["p50_us"] = percentile(us, 0.50);
    state.counters["p99_us"] = percentile(us, 0.99);
}
BENCHMARK(thread_wake_roundtrip)->UseRealTime();

// Many caller fibers on shard 0, each calling shard 1 in a loop: calls per
// second one way (each call is a request there and a reply back). Arg: fibers.
static void submit_to_throughput(benchmark::State& state) {
    if (shard_count() < 2) {
        state.SkipWithError("needs 2 shards");
        return;
    }
    const auto fibers = static_cast<int>(state.range(0));
    constexpr int calls_per_fiber = 2000;
    for (auto _ : state) {
        std::vector<future<void>> callers;
        callers.reserve(static_cast<std::size_t>(fibers));
        for (int f = 0; f < fibers; ++f) {
            callers.push_back(spawn([] {
                for (int i = 0; i < calls_per_fiber; ++i) submit_to(1, [] {}).get();
            }));
        }
        when_all(callers);
    }
    state.SetItemsProcessed(state.iterations() * fibers * calls_per_fiber);
}
BENCHMARK(submit_to_throughput)->ArgName("fibers")->Arg(1)->Arg(16)->Arg(128)->UseRealTime();

// One fiber keeping a window of calls in flight without waiting for each:
// the rings' batching at its best.
static void submit_to_throughput_pipelined(benchmark::State& state) {
    if (shard_count() < 2) {
        state.SkipWithError("needs 2 shards");
        return;
    }
    const auto window = static_cast<std::size_t>(state.range(0));
    constexpr std::size_t calls = 20000;
    std::vector<future<void>> in_flight;
    in_flight.reserve(window);
    for (auto _ : state) {
        for (std::size_t sent = 0; sent < calls; sent += window) {
            for (std::size_t i = 0; i < window; ++i) in_flight.push_back(submit_to(1, [] {}));
            when_all(in_flight);
            in_flight.clear();
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * calls));
}
BENCHMARK(submit_to_throughput_pipelined)->ArgName("window")->Arg(100)->Arg(1000)->UseRealTime();

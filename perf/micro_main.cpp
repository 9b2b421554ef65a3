// build/perf/micro: Google Benchmark micro benchmarks that run inside a real
// reactor. The benchmarks execute in a fiber on shard 0; with 2 or more
// allowed CPUs a second shard runs too (pinned), for the cross-shard cases.
//   build/perf/micro [--benchmark_filter=REGEX] [--benchmark_format=json]
// PERCORE_MICRO_SHARDS=N overrides the shard count; PERCORE_MICRO_CPUS=1,0
// picks the CPUs (shard 0 first); PERCORE_MICRO_IDLE_POLL_US=N makes idle
// shards busy-poll N µs before sleeping (reactor_config::idle_poll).
#include <benchmark/benchmark.h>
#include <sched.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "percore/app.hpp"
#include "percore/runtime.hpp"

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof(set), &set);
    std::vector<unsigned> cpus;
    for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
    }
    if (const char* env = std::getenv("PERCORE_MICRO_CPUS")) {
        cpus.clear();
        std::string text = env;
        for (std::size_t pos = 0; pos < text.size();) {
            auto comma = text.find(',', pos);
            cpus.push_back(static_cast<unsigned>(std::stoul(text.substr(pos, comma - pos))));
            pos = comma == std::string::npos ? text.size() : comma + 1;
        }
    } else if (cpus.size() >= 2) {
        // Shard 0 (the benchmark's caller) on CPU 1, as the servers in perf/ run.
        std::swap(cpus[0], cpus[1]);
    }
    unsigned shards = cpus.size() >= 2 ? 2 : 1;
    if (const char* env = std::getenv("PERCORE_MICRO_SHARDS"))
        shards = static_cast<unsigned>(std::atoi(env));

    percore::runtime_config config;
    config.smp = shards;
    // PERCORE_MICRO_IDLE_POLL_US=N: shards busy-poll N µs before sleeping.
    if (const char* env = std::getenv("PERCORE_MICRO_IDLE_POLL_US")) {
        config.reactor.idle_poll = std::chrono::microseconds(std::atoi(env));
    }
    if (cpus.size() >= shards) config.cpus.assign(cpus.begin(), cpus.begin() + shards);
    return percore::run_shards(config, [] {
        benchmark::RunSpecifiedBenchmarks();
        benchmark::Shutdown();
        return 0;
    });
}

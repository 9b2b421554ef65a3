// The kv store's lookup cost when its items do not fit in the CPU caches:
// the misses on the bucket, the item and its neighbours dominate a GET.
//   build/perf/micro --benchmark_filter='store_'
// Arg: the number of keys (100 B values, the load generator's default size).
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "store.hpp"

using namespace percore::kv;

namespace {

std::string key_name(std::uint64_t i) {
    return "key:" + std::to_string(i);
}

void fill(store& st, std::uint64_t keys) {
    const std::string value(100, 'v');
    for (std::uint64_t i = 0; i < keys; ++i) st.set(key_name(i), value);
}

// Random keys drawn in advance so the draw is not timed; more of them than
// the caches hold, so the key strings miss as little as the requests' would.
std::vector<std::string> random_keys(std::uint64_t keys, std::size_t count) {
    std::mt19937_64 random(42);
    std::vector<std::string> out;
    out.reserve(count);
    for (std::size_t i = 0; i < count; ++i) out.push_back(key_name(random() % keys));
    return out;
}

}  // namespace

// One GET at a time, as a pipeline-1 connection issues them.
static void store_get(benchmark::State& state) {
    const auto keys = static_cast<std::uint64_t>(state.range(0));
    store st;
    fill(st, keys);
    const auto lookups = random_keys(keys, 1 << 16);
    std::size_t next = 0;
    std::int64_t hits = 0;
    std::string out;
    for (auto _ : state) {
        out.clear();
        if (auto v = st.get(lookups[next])) {
            out.append(v->value);  // as a reply copies it
            ++hits;
        }
        next = (next + 1) & (lookups.size() - 1);
    }
    if (hits != state.iterations()) state.SkipWithError("a stored key was missing");
}
BENCHMARK(store_get)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);

// GETs in batches of 16, as one pipelined read of a connection brings them,
// without (second arg 0) and with (1) the batch prefetched before the lookups.
static void store_get_batch16(benchmark::State& state) {
    const auto keys = static_cast<std::uint64_t>(state.range(0));
    store st;
    fill(st, keys);
    const auto lookups = random_keys(keys, 1 << 16);
    std::size_t next = 0;
    std::int64_t hits = 0;
    constexpr std::size_t batch = 16;
    const bool prefetch = state.range(1) != 0;
    std::string out;
    for (auto _ : state) {
        if (prefetch) st.prefetch_keys(batch, [&](std::size_t i) { return lookups[next + i]; });
        out.clear();
        for (std::size_t i = 0; i < batch; ++i) {
            if (auto v = st.get(lookups[next + i])) {
                out.append(v->value);  // as a reply copies it
                ++hits;
            }
        }
        next = (next + batch) & (lookups.size() - 1);
    }
    if (hits != state.iterations() * static_cast<std::int64_t>(batch))
        state.SkipWithError("a stored key was missing");
    state.SetItemsProcessed(
        static_cast<std::int64_t>(state.iterations() * static_cast<std::int64_t>(batch)));
}
BENCHMARK(store_get_batch16)->ArgsProduct({{10'000, 100'000, 1'000'000}, {0, 1}});

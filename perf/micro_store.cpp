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

#include "store/store.hpp"

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

// GETs in batches, as one read of a connection brings them: 1 (pipeline 1)
// or 16, without (third arg 0) and with (1) the batch prefetched before the
// lookups. Args: keys, batch size, prefetch.
static void store_get(benchmark::State& state) {
    const auto keys = static_cast<std::uint64_t>(state.range(0));
    const auto batch = static_cast<std::size_t>(state.range(1));
    const bool prefetch = state.range(2) != 0;
    store st;
    fill(st, keys);
    // Settled, as a server's table is once writes and the expiry tick have
    // moved a growth's items (a bulk load can leave it mid-growth).
    st.finish_growth();
    const auto lookups = random_keys(keys, 1 << 16);
    std::size_t next = 0;
    std::int64_t hits = 0;
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
    const auto gets = state.iterations() * static_cast<std::int64_t>(batch);
    if (hits != gets) state.SkipWithError("a stored key was missing");
    state.SetItemsProcessed(gets);
}
BENCHMARK(store_get)
    ->ArgsProduct({{10'000, 100'000, 1'000'000}, {1}, {0}})
    ->ArgsProduct({{10'000, 100'000, 1'000'000}, {16}, {0, 1}});

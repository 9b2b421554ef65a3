// Shared reads of the kv store (store/store.hpp, "Shared reads"): another shard
// looks keys up in a store it does not own, without a cross-shard call.
// First the answers, on one thread; then a reader shard hammering a store
// while its owner rewrites, grows, empties and refills it: every hit must be
// a value that was really stored, whole, and under ASan no read may touch
// freed memory (the retire / reclaim rule).
#include <catch2/catch.hpp>

#include <atomic>
#include <string>

#include "percore/fiber.hpp"
#include "percore/smp.hpp"
#include "shards.hpp"
#include "store/store.hpp"

using namespace percore;
using namespace percore::kv;

namespace {

time_point fake_now_value = time_point{} + std::chrono::hours(1000);
time_point fake_now() {
    return fake_now_value;
}

// What read_shared() found for `key`, read as shard `reader`.
std::string read_as(const store& s, std::string_view key, unsigned reader = 1) {
    std::string copy;
    switch (s.read_shared(key, key_hash(key), reader,
                          [&](const item_view& v) { copy.assign(v.value); })) {
        case store::shared_read::hit:
            return copy;
        case store::shared_read::miss:
            return "<missing>";
        case store::shared_read::retry:
            return "<retry>";
    }
    return "?";
}

// A value that says which key and which write it is: "key#n#" once, then
// repeated for `extra` more bytes. A copy torn between two writes fails
// is_whole().
std::string value_for(const std::string& key, unsigned n, std::size_t extra) {
    const std::string unit = key + "#" + std::to_string(n) + "#";
    std::string v = unit;
    while (v.size() < unit.size() + extra) v += unit;
    v.resize(unit.size() + extra);
    return v;
}
bool is_whole(const std::string& key, const std::string& v) {
    if (v.size() < key.size() + 3 || v.compare(0, key.size() + 1, key + "#") != 0) return false;
    const std::size_t end = v.find('#', key.size() + 1);
    if (end == std::string::npos) return false;
    const std::string unit = v.substr(0, end + 1);
    const unsigned n = static_cast<unsigned>(std::stoul(v.substr(key.size() + 1)));
    return v == value_for(key, n, v.size() - unit.size());
}

}  // namespace

TEST_CASE("kv shared reads: another shard sees what the owner stored", "[kv]") {
    store_config config;
    config.now = &fake_now;
    store s(config);
    CHECK_FALSE(s.shared_reads_enabled());
    s.enable_shared_reads(2);
    REQUIRE(s.shared_reads_enabled());
    CHECK(read_as(s, "a") == "<missing>");
    REQUIRE(s.set("a", "one") == store_result::stored);
    CHECK(read_as(s, "a") == "one");
    REQUIRE(s.set("a", "two") == store_result::stored);  // in place: same size
    CHECK(read_as(s, "a") == "two");
    REQUIRE(s.set("a", "three") == store_result::stored);  // a new item
    CHECK(read_as(s, "a") == "three");
    // Enough keys to grow the table several times: all still found.
    for (int i = 0; i < 5000; ++i) s.set("k" + std::to_string(i), std::to_string(i));
    for (int i = 0; i < 5000; i += 7)
        CHECK(read_as(s, "k" + std::to_string(i)) == std::to_string(i));
    // Expired keys are misses for a reader too, and it leaves them to the owner.
    REQUIRE(s.set("ttl", "x", {.expiry = fake_now_value + std::chrono::seconds(5)}) ==
            store_result::stored);
    CHECK(read_as(s, "ttl") == "x");
    fake_now_value += std::chrono::seconds(10);
    CHECK(read_as(s, "ttl") == "<missing>");
    CHECK(s.peek("ttl") == std::nullopt);
    REQUIRE(s.remove("a") == store_result::deleted);
    CHECK(read_as(s, "a") == "<missing>");
    s.flush();
    CHECK(read_as(s, "k7") == "<missing>");
    REQUIRE(s.set("k7", "again") == store_result::stored);
    CHECK(read_as(s, "k7") == "again");
}

TEST_CASE("kv shared reads: a read that overlaps a change is retried, not trusted", "[kv]") {
    store s;
    s.enable_shared_reads(2);
    REQUIRE(s.set("a", "old") == store_result::stored);
    std::string seen;
    // The owner changes the item while the reader copies it (here: inside
    // the copy, on the same thread): the reader must report retry.
    const auto found = s.read_shared("a", key_hash("a"), 1, [&](const item_view& v) {
        seen.assign(v.value);
        REQUIRE(s.set("a", "new") == store_result::stored);
    });
    CHECK(found == store::shared_read::retry);
    CHECK(read_as(s, "a") == "new");
}

TEST_CASE("kv shared reads: a reader shard races its owner's writes safely", "[kv]") {
    // Shard 0 owns the store and rewrites it; shard 1 reads it at the same
    // time. Every hit must be a whole value stored under that key.
    constexpr int keys = 2000;
    constexpr int rounds = 6;
    std::atomic<bool> done{false};
    long hits = 0, misses = 0, retries = 0, torn = 0;
    percore::testing::run_in_shards(2, [&] {
        store s;
        s.enable_shared_reads(2);
        auto key = [](int i) { return "key" + std::to_string(i); };
        auto reader = submit_to(1, [&] {
            long h = 0, m = 0, r = 0, t = 0;
            unsigned x = 12345;
            std::string copy;
            while (!done.load(std::memory_order_acquire)) {
                x = x * 1103515245 + 12345;
                const std::string k = key(static_cast<int>((x >> 8) % keys));
                switch (s.read_shared(k, key_hash(k), 1,
                                      [&](const item_view& v) { copy.assign(v.value); })) {
                    case store::shared_read::hit:
                        ++h;
                        if (!is_whole(k, copy)) ++t;
                        break;
                    case store::shared_read::miss:
                        ++m;
                        break;
                    case store::shared_read::retry:
                        ++r;
                        break;
                }
            }
            return std::array<long, 4>{h, m, r, t};
        });
        unsigned n = 0;
        for (int round = 0; round < rounds; ++round) {
            // Grows the table from empty, rewrites in place and with new
            // sizes, removes half, then empties it all.
            for (int i = 0; i < keys; ++i) s.set(key(i), value_for(key(i), ++n, 8 + i % 40));
            for (int pass = 0; pass < 3; ++pass) {
                for (int i = 0; i < keys; ++i)
                    s.set(key(i), value_for(key(i), ++n, 8 + (i + pass) % 60));
                yield();
            }
            for (int i = 0; i < keys; i += 2) s.remove(key(i));
            yield();
            s.flush();
        }
        done.store(true, std::memory_order_release);
        const auto counts = reader.get();
        hits = counts[0];
        misses = counts[1];
        retries = counts[2];
        torn = counts[3];
    });
    INFO("hits " << hits << " misses " << misses << " retries " << retries);
    CHECK(torn == 0);
    CHECK(hits + misses + retries > 0);
}

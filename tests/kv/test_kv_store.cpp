// The kv app's per-shard store: the set family and cas, incr/decr as
// memcached and Redis do them, TTLs (lazy and active expiry, on a fake
// clock), LRU eviction and refusal, flush, scan.
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "percore/timer.hpp"
#include "shards.hpp"
#include "store/store.hpp"

using namespace percore;
using namespace percore::kv;

namespace {

time_point fake_now_value = time_point{} + std::chrono::hours(1000);
time_point fake_now() {
    return fake_now_value;
}

store_config fake_clock_config() {
    store_config c;
    c.now = &fake_now;
    return c;
}

std::string value_of(store& s, std::string_view key) {
    auto v = s.get(key);
    return v ? std::string(v->value) : std::string("<missing>");
}

}  // namespace

TEST_CASE("kv store: set, add, replace, append, prepend", "[kv]") {
    store s;
    CHECK(value_of(s, "a") == "<missing>");
    CHECK(s.set("a", "1", {.flags = 7}) == store_result::stored);
    auto v = s.get("a");
    REQUIRE(v);
    CHECK(v->value == "1");
    CHECK(v->flags == 7);
    CHECK(s.set("a", "2", {.mode = set_mode::add}) == store_result::not_stored);
    CHECK(s.set("b", "2", {.mode = set_mode::add}) == store_result::stored);
    CHECK(s.set("c", "3", {.mode = set_mode::replace}) == store_result::not_stored);
    CHECK(s.set("b", "22", {.mode = set_mode::replace}) == store_result::stored);
    CHECK(s.set("c", "x", {.mode = set_mode::append}) == store_result::not_stored);
    CHECK(s.set("a", "xy", {.mode = set_mode::append, .flags = 99}) == store_result::stored);
    CHECK(s.set("a", "<", {.mode = set_mode::prepend}) == store_result::stored);
    v = s.get("a");
    REQUIRE(v);
    CHECK(v->value == "<1xy");
    CHECK(v->flags == 7);  // append/prepend keep the flags
    CHECK(s.remove("a") == store_result::deleted);
    CHECK(s.remove("a") == store_result::not_found);
    CHECK(s.size() == 1);
    CHECK(s.stats().curr_items == 1);
    CHECK(s.stats().get_hits == 2);
    CHECK(s.stats().get_misses == 1);
    // Binary-safe keys and values, empty values.
    const std::string bin("\0\r\n\xff", 4);
    CHECK(s.set(bin, bin) == store_result::stored);
    CHECK(value_of(s, bin) == bin);
    CHECK(s.set("empty", "") == store_result::stored);
    CHECK(value_of(s, "empty").empty());
}

TEST_CASE("kv store: cas", "[kv]") {
    store s;
    CHECK(s.set("k", "v", {.mode = set_mode::cas, .cas = 1}) == store_result::not_found);
    s.set("k", "v");
    const auto first = s.get("k")->cas;
    CHECK(s.set("k", "w", {.mode = set_mode::cas, .cas = first + 100}) == store_result::exists);
    CHECK(s.set("k", "w", {.mode = set_mode::cas, .cas = first}) == store_result::stored);
    const auto second = s.get("k")->cas;
    CHECK(second != first);
    CHECK(s.set("k", "x", {.mode = set_mode::cas, .cas = first}) == store_result::exists);
    CHECK(value_of(s, "k") == "w");
    // Every modification changes the cas unique (incr too).
    s.set("n", "5");
    const auto before = s.get("n")->cas;
    s.incr("n", 1);
    CHECK(s.get("n")->cas != before);
    CHECK(s.stats().cas_badval == 2);
    CHECK(s.stats().cas_hits == 1);
    CHECK(s.stats().cas_misses == 1);
}

TEST_CASE("kv store: incr and decr as memcached does them", "[kv]") {
    store s;
    CHECK(s.incr("n", 1).status == store_result::not_found);
    s.set("n", "10", {.flags = 3});
    auto r = s.decr("n", 1);
    CHECK(r.status == store_result::stored);
    CHECK(r.value == 9);
    CHECK(value_of(s, "n") == "9 ");  // memcached pads in place with spaces
    CHECK(s.incr("n", 1).value == 10);
    CHECK(value_of(s, "n") == "10");
    CHECK(s.incr("n", 990).value == 1000);
    CHECK(value_of(s, "n") == "1000");
    CHECK(s.get("n")->flags == 3);
    CHECK(s.decr("n", 5000).value == 0);  // decr stops at zero
    s.set("w", "18446744073709551615");
    CHECK(s.incr("w", 2).value == 1);  // incr wraps at 2^64
    s.set("x", "abc");
    CHECK(s.incr("x", 1).status == store_result::non_numeric);
    s.set("x", "-5");
    CHECK(s.decr("x", 1).status == store_result::non_numeric);
    s.set("x", "18446744073709551616");
    CHECK(s.incr("x", 1).status == store_result::non_numeric);
    s.set("x", " 5");
    CHECK(s.incr("x", 1).value == 6);
}

TEST_CASE("kv store: incr_by as Redis does it", "[kv]") {
    store s;
    auto r = s.incr_by("c", 5);
    CHECK(r.status == store_result::stored);
    CHECK(r.value == 5);
    CHECK(s.incr_by("c", -7).value == -2);
    CHECK(value_of(s, "c") == "-2");
    s.set("m", "9223372036854775807");
    CHECK(s.incr_by("m", 1).status == store_result::out_of_range);
    CHECK(value_of(s, "m") == "9223372036854775807");
    for (const char* bad : {"abc", " 5", "05", "1.5", "", "+1"}) {
        s.set("b", bad);
        INFO(bad);
        CHECK(s.incr_by("b", 1).status == store_result::non_numeric);
    }
}

TEST_CASE("kv store: expiry is lazy and active", "[kv]") {
    store s(fake_clock_config());
    s.set("short", "1", {.expiry = fake_now_value + 10s});
    s.set("long", "2", {.expiry = fake_now_value + 100s});
    s.set("forever", "3");
    CHECK(s.set("past", "4", {.expiry = fake_now_value - 1s}) == store_result::stored);
    CHECK(value_of(s, "past") == "<missing>");
    CHECK(s.peek("short")->expiry == fake_now_value + 10s);
    fake_now_value += 11s;
    CHECK(value_of(s, "short") == "<missing>");
    CHECK(s.stats().get_expired == 1);
    CHECK(value_of(s, "long") == "2");
    // touch extends, persist (no_expiry) clears.
    CHECK(s.touch("long", fake_now_value + 1000s) == store_result::touched);
    CHECK(s.touch("gone", fake_now_value + 1000s) == store_result::not_found);
    fake_now_value += 200s;
    CHECK(value_of(s, "long") == "2");
    CHECK(s.touch("long", no_expiry) == store_result::touched);
    fake_now_value += 2000s;
    CHECK(value_of(s, "long") == "2");
    // get_and_touch returns the value and sets the TTL.
    auto v = s.get_and_touch("long", fake_now_value + 5s);
    REQUIRE(v);
    CHECK(v->value == "2");
    fake_now_value += 6s;
    CHECK(!s.peek("long"));
    // A touch into the past removes the key.
    CHECK(s.touch("forever", fake_now_value - 1s) == store_result::touched);
    CHECK(s.size() == 0);

    // Active expiry removes keys nobody reads again, and only expired ones.
    for (int i = 0; i < 1000; ++i) {
        s.set("t" + std::to_string(i), "v", {.expiry = fake_now_value + 5s});
        s.set("p" + std::to_string(i), "v");
    }
    CHECK(s.expire_some() == 0);
    fake_now_value += 10s;
    for (int round = 0; round < 10000 && s.size() > 1000; ++round) s.expire_some();
    CHECK(s.size() == 1000);
    CHECK(s.stats().active_expired == 1000);
    CHECK(s.peek("p999"));
}

TEST_CASE("kv store: the active expiry timer runs on its shard", "[kv]") {
    testing::run_in_reactor([] {
        store_config config = fake_clock_config();
        config.active_expiry_period = 1ms;
        store s(config);
        for (int i = 0; i < 100; ++i)
            s.set("t" + std::to_string(i), "v", {.expiry = fake_now_value + 1s});
        fake_now_value += 2s;
        s.start_active_expiry();
        for (int i = 0; i < 100000 && s.size() > 0; ++i) sleep_for(1ms);
        CHECK(s.size() == 0);
        s.stop_active_expiry();
    });
}

TEST_CASE("kv lru_list: CLOCK gives used items a second chance, never evicts keep", "[kv]") {
    struct node {
        node* lru_prev = nullptr;
        node* lru_next = nullptr;
        bool recently_used = false;
    };
    node a, b, c;
    using list_type = kv::detail::lru_list<node>;
    list_type list;
    for (node* n : {&a, &b, &c}) list.push_front(n);  // a is the oldest
    CHECK(list.victim(nullptr) == &a);
    list_type::mark_used(&a);
    // a was used: it goes to the head unmarked, and b (the next oldest) is chosen.
    CHECK(list.victim(nullptr) == &b);
    CHECK(list.head() == &a);
    CHECK(!a.recently_used);
    // keep is skipped like a used item.
    CHECK(list.victim(&b) == &c);
    // Every item used: one pass clears the marks, then the oldest goes.
    for (node* n : {&a, &b, &c}) list_type::mark_used(n);
    node* oldest = list.tail();
    CHECK(list.victim(nullptr) == oldest);
    // The only item is keep: nothing to evict.
    list_type single;
    node d;
    single.push_front(&d);
    list_type::mark_used(&d);
    CHECK(single.victim(&d) == nullptr);
    CHECK(single.victim(nullptr) == &d);
}

TEST_CASE("kv store: LRU eviction and refusal when full", "[kv]") {
    const std::string value(1000, 'v');
    store_config config;
    config.max_memory = 64 * 1024;
    store s(config);
    int stored = 0;
    for (int i = 0; i < 200; ++i) {
        REQUIRE(s.set("k" + std::to_string(i), value) == store_result::stored);
        ++stored;
        // Reading k0 keeps it recently used.
        CHECK(s.get("k0"));
    }
    CHECK(s.memory_used() <= config.max_memory);
    CHECK(s.stats().evictions > 0);
    CHECK(s.size() + s.stats().evictions == 200);
    CHECK(s.get("k0"));    // survived: always recently used
    CHECK(!s.peek("k1"));  // the oldest untouched ones went first
    CHECK(s.peek("k199"));
    CHECK(s.set("huge", std::string(100 * 1024, 'x')) == store_result::too_large);

    config.evict = false;
    store refusing(config);
    store_result r = store_result::stored;
    int n = 0;
    while (r == store_result::stored && n < 1000)
        r = refusing.set("k" + std::to_string(n++), value);
    CHECK(r == store_result::no_memory);
    CHECK(refusing.stats().evictions == 0);
    CHECK(refusing.stats().out_of_memory == 1);
    CHECK(refusing.memory_used() <= config.max_memory);
    // Deleting makes room again; replacing a key with a same-size value fits.
    CHECK(refusing.remove("k0") == store_result::deleted);
    CHECK(refusing.set("again", value) == store_result::stored);
    CHECK(refusing.set("k1", value) == store_result::stored);
}

TEST_CASE("kv store: flush and scan", "[kv]") {
    store s;
    for (int i = 0; i < 500; ++i) s.set("k" + std::to_string(i), "v");
    std::multiset<std::string> seen;
    std::size_t cursor = 0;
    do {
        cursor = s.scan(cursor, 37, [&](const item_view& v) { seen.insert(std::string(v.key)); });
    } while (cursor != 0);
    CHECK(seen.size() == 500);
    CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 500);
    // Keys present for a whole walk are seen even if the table grows meanwhile.
    std::set<std::string> seen2;
    cursor = s.scan(0, 10, [&](const item_view& v) { seen2.insert(std::string(v.key)); });
    for (int i = 500; i < 5000; ++i) s.set("k" + std::to_string(i), "v");
    while (cursor != 0)
        cursor = s.scan(cursor, 100, [&](const item_view& v) { seen2.insert(std::string(v.key)); });
    for (int i = 0; i < 500; ++i) CHECK(seen2.count("k" + std::to_string(i)) == 1);
    s.flush();
    CHECK(s.size() == 0);
    CHECK(s.memory_used() < 4096);
    CHECK(!s.get("k1"));
    s.set("after", "1");
    CHECK(value_of(s, "after") == "1");
}

TEST_CASE("kv store: delayed flush fires on its shard", "[kv]") {
    testing::run_in_reactor([] {
        store s;
        s.set("a", "1");
        s.flush_at(clock::now() + 1ms);
        CHECK(s.peek("a"));
        sleep_for(20ms);  // the flush timer is due before this sleep ends
        CHECK(!s.peek("a"));
        s.set("b", "1");
        s.flush_at(clock::now() - 1s);  // a past point flushes at once
        CHECK(!s.peek("b"));
    });
}

TEST_CASE("kv store: owner shards spread keys", "[kv]") {
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < 30000; ++i) ++counts[owner_shard("key:" + std::to_string(i), 3)];
    for (int c : counts) {
        CHECK(c > 9000);
        CHECK(c < 11000);
    }
    CHECK(owner_shard("abc", 1) == 0);
    CHECK(key_hash("abc") == key_hash(std::string("abc")));
    CHECK(key_hash("abc") != key_hash("abd"));
}

TEST_CASE("kv store: a same-size overwrite keeps every rule of a set", "[kv]") {
    using namespace std::chrono_literals;
    store s(fake_clock_config());
    REQUIRE(s.set("k", "aaaa", {.flags = 1, .expiry = fake_now_value + 10s}) ==
            store_result::stored);
    const auto first = s.get("k");
    REQUIRE(first);
    const std::uint64_t first_cas = first->cas;
    const std::size_t memory = s.memory_used();
    s.set("other", "x");
    // Same size (the in-place path): new value, flags and cas, expiry cleared.
    REQUIRE(s.set("k", "bbbb", {.flags = 2}) == store_result::stored);
    auto v = s.get("k");
    REQUIRE(v);
    CHECK(v->value == "bbbb");
    CHECK(v->flags == 2);
    CHECK(v->cas > first_cas);
    CHECK(v->expiry == no_expiry);
    fake_now_value += 20s;  // the old TTL must not remove it
    CHECK(value_of(s, "k") == "bbbb");
    // Back to a TTL, then past it.
    REQUIRE(s.set("k", "cccc", {.expiry = fake_now_value + 5s}) == store_result::stored);
    fake_now_value += 6s;
    CHECK_FALSE(s.get("k"));
    CHECK(s.memory_used() < memory + store::footprint(5, 1) + 1);
    // cas on the in-place path: the right cas stores, the old one is refused.
    s.set("c", "1111");
    const std::uint64_t cas = s.get("c")->cas;
    CHECK(s.set("c", "2222", {.mode = set_mode::cas, .cas = cas}) == store_result::stored);
    CHECK(s.set("c", "3333", {.mode = set_mode::cas, .cas = cas}) == store_result::exists);
    CHECK(value_of(s, "c") == "2222");
}

TEST_CASE("kv store: payload_bytes is the key and value bytes of the live items", "[kv]") {
    store_config config = fake_clock_config();
    config.max_memory = 64 * 1024;  // small: sets below evict
    store s(config);
    // The sum over the items, computed the slow way.
    auto walked = [&] {
        std::size_t sum = 0, cursor = 0;
        do {
            cursor = s.scan(cursor, 100,
                            [&](const item_view& v) { sum += v.key.size() + v.value.size(); });
        } while (cursor != 0);
        return sum;
    };
    s.set("a", "12345");
    CHECK(s.payload_bytes() == 6);
    s.set("a", "1");  // shorter
    s.set("b", "xyz", {.expiry = fake_now_value + 10s});
    CHECK(s.payload_bytes() == 2 + 4);
    s.set("a", "-more", {.mode = set_mode::append});
    s.set("n", "99");
    s.incr("n", 1);  // 100: longer, the item is rewritten
    s.incr("n", 1);  // in place
    s.incr_by("m", 12345);
    CHECK(s.payload_bytes() == walked());
    s.remove("a");
    CHECK(s.payload_bytes() == walked());
    fake_now_value += 11s;  // b expires: active expiry removes it
    while (s.expire_some() == 0 && s.peek("b")) {
    }
    CHECK(s.payload_bytes() == walked());
    for (int i = 0; i < 2000; ++i) s.set("k" + std::to_string(i), std::string(100, 'v'));
    CHECK(s.stats().evictions > 0);
    CHECK(s.payload_bytes() == walked());
    s.flush();
    CHECK(s.payload_bytes() == 0);
}

TEST_CASE("kv store: prefetching a batch changes no lookup's answer", "[kv]") {
    // prefetch() reads buckets, chains and item headers to find what to
    // load: over chains several items long (far more keys than the initial
    // table has buckets, before it grows), values from empty to larger than
    // the 256 bytes it prefetches, missing, empty and removed keys.
    auto value_of_key = [](std::size_t i) {
        const std::size_t sizes[] = {0, 1, 100, 300, 5000};
        return std::string(sizes[i % 5], static_cast<char>('a' + i % 26));
    };
    store s;
    std::vector<std::string> keys;
    for (std::size_t i = 0; i < 5000; ++i) {
        keys.push_back("key:" + std::to_string(i));
        REQUIRE(s.set(keys.back(), value_of_key(i)) == store_result::stored);
    }
    for (int i = 0; i < 5000; i += 7) REQUIRE(s.remove(keys[i]) == store_result::deleted);
    keys.push_back("");
    keys.push_back("missing");
    for (std::size_t first = 0; first + 40 <= keys.size(); first += 13) {
        s.prefetch_keys(40, [&](std::size_t i) { return std::string_view(keys[first + i]); });
        for (std::size_t i = first; i < first + 40; ++i) {
            const auto v = s.peek(keys[i]);
            const bool present = i < 5000 && i % 7 != 0;
            REQUIRE(v.has_value() == present);
            if (present) REQUIRE(v->value == value_of_key(i));
        }
    }
}

TEST_CASE("kv store: the table grows incrementally, and every key stays found", "[kv]") {
    store s;
    auto key = [](int i) { return "grow" + std::to_string(i); };
    auto table_bytes = [&] {
        std::size_t items = 0;
        for (int i = 0; i < static_cast<int>(s.size()); ++i)
            items += store::footprint(key(i).size(), key(i).size());
        return s.memory_used() - items;
    };
    // Fill the table to its load limit: 1024 buckets hold 1024 items.
    int n = 0;
    while (n < 1024) {
        REQUIRE(s.set(key(n), key(n)) == store_result::stored);
        ++n;
    }
    REQUIRE(table_bytes() == 1024 * sizeof(void*));
    // One more starts the growth: both tables exist, and that write moved
    // only a few old buckets, not all of them.
    REQUIRE(s.set(key(n), key(n)) == store_result::stored);
    ++n;
    CHECK(s.growing());
    CHECK(table_bytes() == (1024 + 2048) * sizeof(void*));
    // Mid-growth every key is found, and a full scan (in small steps, as
    // SCAN does) sees each of them.
    for (int i = 0; i < 200; ++i, ++n) REQUIRE(s.set(key(n), key(n)) == store_result::stored);
    CHECK(table_bytes() == (1024 + 2048) * sizeof(void*));
    for (int i = 0; i < n; ++i) REQUIRE(value_of(s, key(i)) == key(i));
    std::set<std::string> seen;
    std::size_t cursor = 0;
    do {
        cursor = s.scan(cursor, 10, [&](const item_view& v) { seen.emplace(v.key); });
    } while (cursor != 0);
    CHECK(seen.size() == static_cast<std::size_t>(n));
    // Writes move two old buckets each: the old table is gone well before
    // the new one fills, and nothing was lost.
    for (int i = 0; i < 600; ++i, ++n) REQUIRE(s.set(key(n), key(n)) == store_result::stored);
    CHECK_FALSE(s.growing());
    CHECK(table_bytes() == 2048 * sizeof(void*));
    for (int i = 0; i < n; ++i) REQUIRE(value_of(s, key(i)) == key(i));
    // Removing while growing, and a flush mid-growth, leave a consistent table.
    while (n < 2049) {
        REQUIRE(s.set(key(n), key(n)) == store_result::stored);
        ++n;
    }
    CHECK(table_bytes() == (2048 + 4096) * sizeof(void*));
    for (int i = 0; i < n; i += 3) REQUIRE(s.remove(key(i)) == store_result::deleted);
    for (int i = 0; i < n; ++i) REQUIRE(value_of(s, key(i)) == (i % 3 == 0 ? "<missing>" : key(i)));
    s.flush();
    CHECK(s.size() == 0);
    REQUIRE(s.set("after", "flush") == store_result::stored);
    CHECK(value_of(s, "after") == "flush");
}

TEST_CASE("kv store: an idle growing table finishes on the expiry tick", "[kv]") {
    store s;
    for (int i = 0; i <= 4096; ++i)
        REQUIRE(s.set("k" + std::to_string(i), "v") == store_result::stored);
    const std::size_t growing = s.memory_used();
    s.expire_some();  // no writes: the tick moves the rest (a millisecond is plenty here)
    CHECK(s.memory_used() == growing - 4096 * sizeof(void*));
    for (int i = 0; i <= 4096; ++i) REQUIRE(value_of(s, "k" + std::to_string(i)) == "v");
}

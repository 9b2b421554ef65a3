// Sharded forwarding in the kv app: the forwarder runs each operation on its
// owner shard and keeps reply order; the memcached session on top of it
// stores keys on their owners, cuts long pipelines and multi-gets in
// batches, treats flush_all / stats as barriers, and refuses a gat as a
// whole when a shard's log cannot take its touch.
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "db.hpp"
#include "forward.hpp"
#include "memcache/memcache_protocol.hpp"
#include "percore/sharded.hpp"
#include "shards.hpp"

using namespace percore;
using namespace percore::kv;

namespace {

// Feeds `input` to a session in pieces of `step` bytes the way a connection
// does (keeping the unconsumed bytes) and returns all the replies.
std::string drive(memcache::session& s, const std::string& input, std::size_t step) {
    std::string buffer, out;
    std::size_t fed = 0;
    while (fed < input.size()) {
        const std::size_t n = std::min(step, input.size() - fed);
        buffer.append(input, fed, n);
        fed += n;
        for (;;) {
            auto r = s.process(buffer, out);
            buffer.erase(0, r.consumed);
            REQUIRE(!r.close);
            if (!r.more) break;
        }
    }
    CHECK(buffer.empty());
    return out;
}

template <typename F>
void with_db(F&& body) {
    testing::run_in_shards(2, [&] {
        db database;
        database.start(db_config{});
        try {
            body(database);
        } catch (...) {
            database.stop();
            throw;
        }
        database.stop();
    });
}

}  // namespace

TEST_CASE("kv forwarder: operations run on their shard, replies in order", "[kv]") {
    with_db([](db& database) {
        forwarder f(database);
        REQUIRE(f.shards() == 2);
        // Tag i runs on shard i % 2 (or 2 for every third) and writes "<i>@<shard> ".
        struct exec_t {
            std::string_view key(std::uint32_t) const noexcept { return {}; }
            void operator()(db_shard&, std::uint32_t tag, std::string& out) const {
                out += std::to_string(tag) + "@" + std::to_string(this_shard_id()) + " ";
            }
        } exec;
        std::string expected;
        for (int round = 0; round < 3; ++round) {
            std::string out;
            expected.clear();
            for (std::uint32_t i = 0; i < 1000; ++i) {
                const unsigned shard = (i % 3 == 0) ? 1 : i % 2;
                f.add(shard, i);
                expected += std::to_string(i) + "@" + std::to_string(shard) + " ";
            }
            std::vector<std::size_t> ends;
            f.run(exec, out, &ends);
            CHECK(out == expected);
            CHECK(f.empty());
            // Where each reply ends: "<i>@<shard> " is digits(i) + 3 bytes.
            REQUIRE(ends.size() == 1000);
            std::size_t end = 0;
            for (std::uint32_t i = 0; i < 1000; ++i) {
                end += std::to_string(i).size() + 3;
                CHECK(ends[i] == end);
            }
        }
        // All-local batches write straight through.
        std::string out = "x";
        std::vector<std::size_t> ends;
        f.add(0, 7);
        f.add(0, 8);
        f.run(exec, out, &ends);
        CHECK(out == "x7@0 8@0 ");
        CHECK(ends == std::vector<std::size_t>{5, 9});
    });
}

TEST_CASE("kv forwarder: an exception on a shard reaches the caller after the batch", "[kv]") {
    with_db([](db& database) {
        forwarder f(database);
        struct exec_t {
            std::string_view key(std::uint32_t) const noexcept { return {}; }
            void operator()(db_shard&, std::uint32_t tag, std::string& out) const {
                if (tag == 3) throw std::runtime_error("op 3 failed");
                out += "ok";
            }
        } exec;
        for (std::uint32_t i = 0; i < 6; ++i) f.add(i % 2, i);
        std::string out;
        CHECK_THROWS_WITH(f.run(exec, out), "op 3 failed");
        CHECK(f.empty());
        f.add(1, 0);
        f.run(exec, out);
        CHECK(out == "ok");
    });
}

TEST_CASE("kv memcache session: keys live on their owner shards", "[kv]") {
    with_db([](db& database) {
        memcache::session s(database, {});
        std::string script, expected;
        for (int i = 0; i < 600; ++i) {
            const std::string k = "key" + std::to_string(i);
            script += "set " + k + " " + std::to_string(i) + " 0 " + std::to_string(k.size()) +
                      "\r\n" + k + "\r\n";
            expected += "STORED\r\n";
        }
        // 600 requests: more than one batch, fed whole and in odd pieces.
        CHECK(drive(s, script, script.size()) == expected);
        CHECK(drive(s, script, 7) == expected);
        // Each shard holds exactly the keys it owns.
        auto counts = database.invoke_on_all([](db_shard& shard) {
            std::size_t owned = 0;
            for (int i = 0; i < 600; ++i) {
                const std::string k = "key" + std::to_string(i);
                if (shard.store().peek(k)) {
                    REQUIRE(owner_shard(k, shard_count()) == this_shard_id());
                    ++owned;
                }
            }
            return owned;
        });
        CHECK(counts[0] + counts[1] == 600);
        CHECK(counts[0] > 200);
        CHECK(counts[1] > 200);

        // A multi-get of 600 keys (cut in batches), mixed with other requests.
        std::string get = "get";
        std::string values;
        for (int i = 0; i < 600; ++i) {
            const std::string k = "key" + std::to_string(i);
            get += " " + k;
            values += "VALUE " + k + " " + std::to_string(i) + " " + std::to_string(k.size()) +
                      "\r\n" + k + "\r\n";
        }
        const std::string mixed = "version\r\n" + get + " nokey\r\nincr nokey 1\r\n" + get + "\r\n";
        const std::string want = std::string(memcache::version_line) + values +
                                 "END\r\nNOT_FOUND\r\n" + values + "END\r\n";
        CHECK(drive(s, mixed, mixed.size()) == want);
        CHECK(drive(s, mixed, 1000) == want);
        CHECK(drive(s, mixed, 1) == want);

        // flush_all and stats are barriers: what precedes them is done first.
        const std::string barrier =
            "set z 0 0 1\r\nz\r\nflush_all\r\nget z key1\r\nset y 0 0 1\r\ny\r\n";
        CHECK(drive(s, barrier, barrier.size()) == "STORED\r\nOK\r\nEND\r\nSTORED\r\n");
        std::string stats = drive(s, "stats\r\n", 100);
        CHECK(stats.find("STAT curr_items 1\r\n") != std::string::npos);
        CHECK(stats.find("STAT threads 2\r\n") != std::string::npos);
        CHECK(stats.ends_with("END\r\n"));
    });
}

namespace {

// A shard's log whose disk is full: refuses every write, counts what it was
// asked to log anyway (there must be nothing).
struct full_disk_log final : store_observer {
    bool accepting() const noexcept override { return false; }
    void on_set(const item_view&) override { ++logged; }
    void on_remove(std::string_view) override { ++logged; }
    void on_expire(std::string_view, time_point) override { ++logged; }
    void on_flush() override { ++logged; }
    int logged = 0;
};

}  // namespace

TEST_CASE("kv memcache session: gat is refused as a whole when a shard's disk is full", "[kv]") {
    with_db([](db& database) {
        memcache::session s(database, {});
        std::vector<std::string> on[2];  // keys by owner shard
        std::string sets, expected_sets;
        for (int i = 0; on[0].size() < 300 || on[1].size() < 300; ++i) {
            const std::string k = "k" + std::to_string(i);
            on[owner_shard(k, 2)].push_back(k);
            sets += "set " + k + " 0 0 1\r\nv\r\n";
            expected_sets += "STORED\r\n";
        }
        REQUIRE(drive(s, sets, sets.size()) == expected_sets);
        auto value = [](const std::string& k) { return "VALUE " + k + " 0 1\r\nv\r\n"; };
        auto keys = [&](unsigned shard, std::size_t n) {
            std::string list;
            for (std::size_t i = 0; i < n; ++i) list += " " + on[shard][i];
            return list;
        };
        // Logs of full disks on the shards in `full`; detached by the guard.
        full_disk_log logs[2];
        auto set_full = [&](std::vector<unsigned> full) {
            database.invoke_on_all([&](db_shard& shard) {
                const unsigned me = this_shard_id();
                const bool refuse = std::find(full.begin(), full.end(), me) != full.end();
                shard.store().set_observer(refuse ? &logs[me] : nullptr);
            });
        };
        struct detach {
            std::function<void()> f;
            ~detach() { f(); }
        } guard{[&] { set_full({}); }};
        auto unexpired = [&](unsigned shard) {
            return database
                .invoke_on(shard,
                           [&](db_shard& sh) {
                               for (const auto& k : on[shard]) {
                                   auto v = sh.store().peek(k);
                                   if (!v || v->expiry != no_expiry) return false;
                               }
                               return true;
                           })
                .get();
        };
        const std::string no_disk(memcache::replies::no_disk);

        SECTION("every shard full: one SERVER_ERROR, nothing touched, gets still answered") {
            set_full({0, 1});
            const std::string script = "gat 100" + keys(0, 2) + keys(1, 2) + " nokey\r\n" + "get " +
                                       on[1][0] + "\r\ngats 0 nokey\r\n" + "gat -1" + keys(0, 1) +
                                       "\r\nset x 0 0 1\r\nx\r\n";
            const std::string want =
                no_disk + value(on[1][0]) + "END\r\n" + no_disk + no_disk + no_disk;
            CHECK(drive(s, script, script.size()) == want);
            CHECK(drive(s, script, 5) == want);
            // More keys than a batch (cut in three): still one line.
            const std::string big =
                "gat 100" + keys(0, 300) + keys(1, 300) + "\r\nget " + on[0][0] + "\r\n";
            CHECK(drive(s, big, big.size()) == no_disk + value(on[0][0]) + "END\r\n");
            CHECK(drive(s, big, 1000) == no_disk + value(on[0][0]) + "END\r\n");
            CHECK(unexpired(0));
        }
        SECTION("one shard full: a gat of its keys is refused, one of the other's is not") {
            set_full({1});
            const std::string script = "gat 100" + keys(0, 2) + keys(1, 1) + "\r\ngat 100" +
                                       keys(1, 2) + "\r\ngat 100" + keys(0, 2) + "\r\n";
            const std::string want =
                no_disk + no_disk + value(on[0][0]) + value(on[0][1]) + "END\r\n";
            CHECK(drive(s, script, script.size()) == want);
            // Cut in batches, refused in the first: the rest of its keys are skipped.
            const std::string big = "gat 100" + keys(1, 300) + keys(0, 300) + "\r\nversion\r\n";
            CHECK(drive(s, big, big.size()) == no_disk + std::string(memcache::version_line));
        }
        CHECK(unexpired(1));
        CHECK(database.invoke_on(0, [&](db_shard&) { return logs[0].logged; }).get() == 0);
        CHECK(database.invoke_on(1, [&](db_shard&) { return logs[1].logged; }).get() == 0);
    });
}

TEST_CASE("kv memcache session: quit and fatal errors close", "[kv]") {
    with_db([](db& database) {
        memcache::session s(database, {});
        std::string out;
        auto r = s.process("get a\r\nquit\r\nget b\r\n", out);
        CHECK(r.close);
        CHECK(r.consumed == 13);
        CHECK(out == "END\r\n");
        out.clear();
        memcache::session t(database, {});
        r = t.process(std::string(3000, 'x'), out);
        CHECK(r.close);
        CHECK(out == memcache::replies::line_too_long);
    });
}

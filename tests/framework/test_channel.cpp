// Cross-shard channels over real shards: the shared (SPSC) channel with its
// back-pressure and close semantics, then full and partial meshes.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "percore/channel.hpp"
#include "percore/fiber.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_shards;
using namespace std::chrono_literals;

namespace {
constexpr auto hang_guard = 20s;  // turns a lost wake-up into a failure, not a hang

std::uint64_t full_waits_of_shard_1() {
    return submit_to(1, [] { return reactor::local().stats().smp_ring_full_waits; }).get();
}

// Until a sender on shard 1 waited on a full channel since `before`.
void wait_for_full_wait(std::uint64_t before) {
    const auto deadline = clock::now() + hang_guard;
    while (full_waits_of_shard_1() == before && clock::now() < deadline) yield();
    REQUIRE(full_waits_of_shard_1() > before);
}
}  // namespace

TEST_CASE("shared channel: 100 000 items through a small channel, in order, then the end") {
    run_in_shards(2, [] {
        constexpr int n = 100'000;
        auto [tx, rx] = make_shared_channel<std::unique_ptr<int>>(64);
        std::uint64_t full_waits_before =
            submit_to(1, [] { return reactor::local().stats().smp_ring_full_waits; }).get();
        auto producer = submit_to(1, [tx = std::move(tx)]() mutable {
            for (int i = 0; i < n; ++i) tx.send(std::make_unique<int>(i));
            tx.close();
            return reactor::local().stats().smp_ring_full_waits;
        });
        int expected = 0;
        bool in_order = true;
        // The producer fills the channel and must wait: observed on its
        // shard's counter, not assumed after a sleep.
        wait_for_full_wait(full_waits_before);
        while (auto item = rx.recv()) {
            if (**item != expected) in_order = false;
            ++expected;
            // A slow consumer now and then: the producer must wait for room.
            if (expected % 10'000 == 0) sleep_for(1ms);
        }
        REQUIRE(expected == n);
        REQUIRE(in_order);
        REQUIRE(producer.get(clock::now() + hang_guard) > full_waits_before);
        // After the end, recv keeps reporting the end.
        REQUIRE_FALSE(rx.recv().has_value());
    });
}

TEST_CASE("shared channel: the receiver sees the end when the sender closes while it waits") {
    run_in_shards(2, [] {
        auto [tx, rx] = make_shared_channel<int>(8);
        auto receiver = submit_to(1, [rx = std::move(rx)]() mutable {
            std::vector<int> got;
            while (auto v = rx.recv()) got.push_back(*v);
            return got;
        });
        tx.send(1);
        tx.send(2);
        // The receiver drains these and waits on an empty channel; its shard
        // goes to sleep meanwhile: close only once it does.
        const time_point give_up = clock::now() + hang_guard;
        while (!reactor::of_shard(1).sleeping() && clock::now() < give_up) yield();
        REQUIRE(reactor::of_shard(1).sleeping());
        tx.close();
        REQUIRE(receiver.get(clock::now() + hang_guard) == std::vector<int>{1, 2});
        REQUIRE_THROWS_AS(tx.send(3), std::logic_error);
    });
}

TEST_CASE("shared channel: dropping the sender ends the stream too") {
    run_in_shards(2, [] {
        auto [tx, rx] = make_shared_channel<std::string>(4);
        auto receiver = submit_to(1, [rx = std::move(rx)]() mutable {
            std::vector<std::string> got;
            while (auto v = rx.recv()) got.push_back(*v);
            return got;
        });
        {
            auto sender = std::move(tx);
            sender.send("a");
            sender.send("b");
        }
        REQUIRE(receiver.get(clock::now() + hang_guard) == std::vector<std::string>{"a", "b"});
    });
}

TEST_CASE(
    "shared channel: a sender waiting on a full channel gets an error when the receiver closes") {
    run_in_shards(2, [] {
        auto [tx, rx] = make_shared_channel<int>(2);
        auto sender = submit_to(1, [tx = std::move(tx)]() mutable {
            int sent = 0;
            try {
                for (;;) {
                    tx.send(sent);
                    ++sent;
                }
            } catch (const channel_closed_error&) {
                return sent;
            }
        });
        const std::uint64_t full_waits_before = full_waits_of_shard_1();
        REQUIRE(rx.recv() == 0);
        // The sender fills the channel and waits for room (observed).
        wait_for_full_wait(full_waits_before);
        rx.close();
        int sent = sender.get(clock::now() + hang_guard);
        REQUIRE(sent >= 2);
        REQUIRE(sent <= 3);  // one received, at most two more fit
    });
}

TEST_CASE("shared channel: sending to a closed receiver throws at once") {
    run_in_shards(2, [] {
        auto [tx, rx] = make_shared_channel<int>(4);
        rx.close();
        auto attempt = submit_to(1, [tx = std::move(tx)]() mutable { tx.send(1); });
        REQUIRE_THROWS_AS(attempt.get(), channel_closed_error);
    });
}

TEST_CASE("shared channel: an end is bound to one shard; bad capacities are refused") {
    run_in_shards(2, [] {
        auto [tx, rx] = make_shared_channel<int>(4);
        tx.connect();  // bound to shard 0 now
        auto elsewhere = submit_to(1, [&tx] { tx.send(1); });
        REQUIRE_THROWS_AS(elsewhere.get(), std::logic_error);
        REQUIRE_THROWS_AS(make_shared_channel<int>(0), std::invalid_argument);
        REQUIRE_THROWS_AS(make_shared_channel<int>(max_channel_capacity + 1),
                          std::invalid_argument);
        tx.send(7);
        REQUIRE(rx.recv() == 7);
    });
}

TEST_CASE("full mesh: every shard sends to every other and receives everything") {
    for (unsigned smp : {2u, 4u, 8u}) {
        DYNAMIC_SECTION(smp << " shards") {
            run_in_shards(smp, [smp] {
                constexpr int per_peer = 500;
                mesh_builder<std::pair<unsigned, int>> builder(smp, 16);
                auto results = invoke_on_all([builder, smp]() mutable {
                    auto conn = builder.join();
                    if (conn.peer_count() != smp) throw std::logic_error("wrong peer count");
                    unsigned self = conn.peer_id();
                    // Send from a second fiber while this one receives, so
                    // nobody waits on a full channel nobody drains.
                    auto sending = spawn([&conn, self] {
                        for (int i = 0; i < per_peer; ++i) {
                            for (unsigned p : conn.consumers()) conn.send_to(p, {self, i});
                        }
                    });
                    // Receive in the order items are sent (item i from every
                    // producer before item i + 1), so no cycle of full
                    // channels can form.
                    int good = 0;
                    for (int i = 0; i < per_peer; ++i) {
                        for (unsigned p : conn.producers()) {
                            auto v = conn.recv_from(p);
                            if (v && v->first == p && v->second == i) ++good;
                        }
                    }
                    sending.get();
                    conn.close();
                    return std::pair{good, conn.producers().size()};
                });
                for (auto [good, producers] : results) {
                    REQUIRE(producers == smp - 1);
                    REQUIRE(good == per_peer * static_cast<int>(smp - 1));
                }
            });
        }
    }
}

TEST_CASE("partial mesh: producers send to consumers only; closing ends each stream") {
    run_in_shards(4, [] {
        mesh_builder<int> builder(4, 8);
        auto results = invoke_on_all([builder]() mutable -> std::vector<int> {
            // Shards 0 and 1 produce, 2 and 3 consume.
            bool producer = this_shard_id() < 2;
            auto conn = builder.join(producer ? mesh_role::producer : mesh_role::consumer);
            if (producer) {
                if (!conn.producers().empty()) throw std::logic_error("producer has producers");
                for (unsigned c : conn.consumers()) {
                    for (int i = 0; i < 100; ++i)
                        conn.send_to(c, static_cast<int>(conn.peer_id()) * 1000 + i);
                }
                // A producer may not receive.
                try {
                    conn.recv_from(conn.consumers().front());
                    return {-1};
                } catch (const std::logic_error&) {
                }
                conn.close();
                return {static_cast<int>(conn.consumers().size())};
            }
            std::vector<int> sums;
            for (unsigned p : conn.producers()) {
                int sum = 0, count = 0;
                while (auto v = conn.recv_from(p)) {
                    sum += *v - static_cast<int>(p) * 1000;
                    ++count;
                }
                sums.push_back(count == 100 ? sum : -count);
            }
            return sums;
        });
        REQUIRE(results[0] == std::vector<int>{2});
        REQUIRE(results[1] == std::vector<int>{2});
        REQUIRE(results[2] == std::vector<int>{4950, 4950});
        REQUIRE(results[3] == std::vector<int>{4950, 4950});
    });
}

TEST_CASE("mesh: bad use is an error, not a hang") {
    run_in_shards(2, [] {
        REQUIRE_THROWS_AS(mesh_builder<int>(0, 4), std::invalid_argument);
        REQUIRE_THROWS_AS(mesh_builder<int>(2, 0), std::invalid_argument);
        mesh_builder<int> builder(2, 4);
        auto other = submit_to(1, [builder]() mutable {
            auto conn = builder.join();
            return conn.recv_from(0).value_or(-1);
        });
        auto conn = builder.join();
        REQUIRE_THROWS_AS(conn.send_to(conn.peer_id(), 1), std::logic_error);
        REQUIRE_THROWS_AS(conn.send_to(9, 1), std::logic_error);
        REQUIRE_THROWS_AS(builder.join(), std::logic_error);  // the mesh is complete
        conn.send_to(1 - conn.peer_id(), 42);
        REQUIRE(other.get(clock::now() + hang_guard) == 42);
    });
}

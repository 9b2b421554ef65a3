// sharded<T> and service<T> over real shards: where instances live, the order
// of construction, start, stop and destruction, and the calls between them.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>

#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/sharded.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using percore::testing::run_in_shards;
using namespace std::chrono_literals;

namespace {

// What happened, from every shard's thread (hence the mutex).
struct event_log {
    std::mutex lock;
    std::vector<std::string> events;
    std::vector<std::string> violations;  // a member used off its own thread

    void add(std::string e) {
        std::lock_guard g(lock);
        events.push_back(std::move(e));
    }
    void violation(std::string v) {
        std::lock_guard g(lock);
        violations.push_back(std::move(v));
    }
    std::size_t index_of(const std::string& e) {
        std::lock_guard g(lock);
        return static_cast<std::size_t>(std::find(events.begin(), events.end(), e) -
                                        events.begin());
    }
};

// Records its shard and thread at construction and checks them whenever it
// is touched again, including in its destructor.
class counter_service : public service<counter_service> {
  public:
    counter_service(event_log& log, std::string name)
        : log_(log),
          name_(std::move(name)),
          shard_(this_shard_id()),
          thread_(std::this_thread::get_id()) {
        log_.add("construct " + std::to_string(shard_));
    }
    ~counter_service() {
        check("destructor");
        log_.add("destroy " + std::to_string(shard_));
    }

    void start() {
        check("start");
        log_.add("start " + std::to_string(shard_));
    }
    void stop() {
        check("stop");
        // A stop() may still reach its peers: none is destroyed yet.
        unsigned peer = (shard_ + 1) % shard_count();
        auto peer_name =
            container().invoke_on(peer, [](counter_service& s) { return s.name_; }).get();
        if (peer_name != name_)
            log_.violation("peer gone during stop on shard " + std::to_string(shard_));
        log_.add("stop " + std::to_string(shard_));
    }

    int add(int n) {
        check("add");
        count_ += n;
        return count_;
    }
    int count() const { return count_; }
    unsigned shard() const { return shard_; }

  private:
    void check(const char* what) {
        if (this_shard_id() != shard_ || std::this_thread::get_id() != thread_) {
            log_.violation(std::string(what) + " of shard " + std::to_string(shard_) +
                           "'s instance ran on shard " + std::to_string(this_shard_id()));
        }
    }

    event_log& log_;
    std::string name_;
    unsigned shard_;
    std::thread::id thread_;
    int count_ = 0;
};

// A plain type (no service base, no hooks) works too.
struct plain_counter {
    explicit plain_counter(int start) : value(start + static_cast<int>(this_shard_id())) {}
    int value;
};

}  // namespace

TEST_CASE("sharded<T>: one instance per shard, built and destroyed on its own thread, in order") {
    for (unsigned smp : {2u, 4u, 8u}) {
        DYNAMIC_SECTION(smp << " shards") {
            event_log log;
            run_in_shards(smp, [&] {
                sharded<counter_service> counters;
                counters.start(std::ref(log), std::string("counters"));
                REQUIRE(counters.started());
                REQUIRE(counters.local().shard() == 0);

                auto shards = counters.invoke_on_all([](counter_service& s) { return s.shard(); });
                for (unsigned s = 0; s < smp; ++s) REQUIRE(shards[s] == s);

                // container() reaches the peers from inside an instance.
                auto via_peer = counters.invoke_on(1, [](counter_service& s) {
                    return s.container()
                        .invoke_on(0, [](counter_service& z) { return z.add(5); })
                        .get();
                });
                REQUIRE(via_peer.get() == 5);
                REQUIRE(counters.local().count() == 5);

                counters.stop();
                REQUIRE_FALSE(counters.started());
                REQUIRE_THROWS_AS(counters.local(), std::logic_error);
            });
            REQUIRE(log.violations.empty());
            // Construction everywhere before any start(); every stop() before
            // any destruction.
            std::size_t last_construct = 0, first_start = log.events.size();
            std::size_t last_stop = 0, first_destroy = log.events.size();
            for (unsigned s = 0; s < smp; ++s) {
                auto n = std::to_string(s);
                last_construct = std::max(last_construct, log.index_of("construct " + n));
                first_start = std::min(first_start, log.index_of("start " + n));
                last_stop = std::max(last_stop, log.index_of("stop " + n));
                first_destroy = std::min(first_destroy, log.index_of("destroy " + n));
                REQUIRE(log.index_of("destroy " + n) < log.events.size());
            }
            REQUIRE(last_construct < first_start);
            REQUIRE(first_start < log.events.size());
            REQUIRE(last_stop < first_destroy);
            REQUIRE(log.events.size() == 4 * smp);
        }
    }
}

TEST_CASE("sharded<T>: map_reduce folds one value per shard on the caller") {
    run_in_shards(4, [] {
        sharded<plain_counter> counters;
        counters.start(10);
        // Each shard's value is 10 + shard id.
        int sum = counters.map_reduce([](plain_counter& c) { return c.value; }, 0,
                                      [](int acc, int v) { return acc + v; });
        REQUIRE(sum == 10 + 11 + 12 + 13);
        // The fold runs in shard order on the calling shard.
        auto order = counters.map_reduce([](plain_counter&) { return this_shard_id(); },
                                         std::vector<unsigned>{},
                                         [](std::vector<unsigned> acc, unsigned s) {
                                             acc.push_back(s);
                                             return acc;
                                         });
        REQUIRE(order == std::vector<unsigned>{0, 1, 2, 3});
        // A mapper may suspend.
        auto slow = counters.map_reduce(
            [](plain_counter& c) {
                sleep_for(1ms);
                return c.value;
            },
            0, [](int acc, int v) { return std::max(acc, v); });
        REQUIRE(slow == 13);
        counters.invoke_on_all([](plain_counter& c) { c.value = 1; });
        REQUIRE(counters.map_reduce([](plain_counter& c) { return c.value; }, 0,
                                    std::plus<int>()) == 4);
        counters.stop();
    });
}

namespace {
struct fails_on_two {
    static inline std::atomic<int> live{0};
    fails_on_two() {
        if (this_shard_id() == 2) throw std::runtime_error("no room on shard 2");
        ++live;
    }
    ~fails_on_two() { --live; }
};
}  // namespace

TEST_CASE("sharded<T>: a failed start undoes itself and reports the error") {
    run_in_shards(4, [] {
        sharded<fails_on_two> s;
        REQUIRE_THROWS_WITH(s.start(), "no room on shard 2");
        REQUIRE_FALSE(s.started());
        REQUIRE(fails_on_two::live.load() == 0);
        REQUIRE_THROWS_AS(s.invoke_on(0, [](fails_on_two&) {}), std::logic_error);
    });
}

TEST_CASE("sharded<T>: starting twice is an error") {
    run_in_shards(2, [] {
        sharded<plain_counter> s;
        s.start(1);
        REQUIRE_THROWS_AS(s.start(1), std::logic_error);
        s.stop();
        s.stop();  // a second stop is a no-op
    });
}

TEST_CASE("sharded<T>: destroyed without stop() is reported, then stopped on the owning shards") {
    std::ostringstream captured;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
    logger().sinks().push_back(sink);
    event_log log;
    run_in_shards(2, [&] {
        {
            sharded<counter_service> forgotten;
            forgotten.start(std::ref(log), std::string("forgotten"));
        }
        REQUIRE(log.index_of("stop 1") < log.events.size());
        REQUIRE(log.index_of("destroy 0") < log.events.size());
        REQUIRE(log.index_of("destroy 1") < log.events.size());
    });
    auto& sinks = logger().sinks();
    sinks.erase(std::find(sinks.begin(), sinks.end(), sink));
    REQUIRE_THAT(captured.str(), Catch::Contains("destroyed without stop()"));
    REQUIRE(log.violations.empty());
}

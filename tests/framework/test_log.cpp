// percore/log.hpp: the rate limit for lines a client can trigger at will.
#include <spdlog/sinks/ostream_sink.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>

#include "percore/errors.hpp"
#include "percore/log.hpp"

using namespace percore;
using namespace std::chrono_literals;

namespace {

// Copies what the process-wide logger writes while it lives.
struct captured_log {
    std::ostringstream text;
    std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink =
        std::make_shared<spdlog::sinks::ostream_sink_mt>(text);
    captured_log() { logger().sinks().push_back(sink); }
    ~captured_log() { logger().sinks().pop_back(); }
    std::size_t count(const std::string& what) const {
        const std::string s = text.str();
        std::size_t n = 0;
        for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
        return n;
    }
};

}  // namespace

TEST_CASE("rate_limited_log writes the first lines of a window, then one summary") {
    captured_log out;
    rate_limited_log limit("test: bad requests", 3, 5s);
    const auto t0 = rate_limited_log::clock::time_point{} + 1h;
    int admitted = 0;
    for (int i = 0; i < 1000; ++i) {
        if (limit.admit(spdlog::level::warn, t0 + i * 1ms)) ++admitted;
    }
    CHECK(admitted == 3);
    CHECK(limit.suppressed_total() == 997);
    CHECK(out.count("suppressed") == 0);  // not before the window ends

    // The next window: its first event writes the summary, then passes.
    CHECK(limit.admit(spdlog::level::warn, t0 + 6s));
    CHECK(out.count("test: bad requests: 997 more such lines suppressed") == 1);
    CHECK(limit.admit(spdlog::level::warn, t0 + 6s));
    CHECK(limit.admit(spdlog::level::warn, t0 + 6s));
    CHECK_FALSE(limit.admit(spdlog::level::warn, t0 + 6s));
    // A quiet window after one without suppressions writes no summary.
    CHECK(limit.admit(spdlog::level::warn, t0 + 12s));
    CHECK(out.count("suppressed") == 2);  // the second one: the single line of t0 + 6 s
    CHECK(out.count(": 1 more such lines suppressed") == 1);
    CHECK(limit.admit(spdlog::level::warn, t0 + 20s));
    CHECK(out.count("suppressed") == 2);
}

TEST_CASE("a flood through rate_limited_log writes a bounded number of lines") {
    captured_log out;
    rate_limited_log limit("test: flood", 10, 10s);
    for (int i = 0; i < 20000; ++i) limit.warn("test: flood line {}", i);
    CHECK(out.count("test: flood line ") == 10);
    CHECK(limit.suppressed_total() == 19990);
}

TEST_CASE("rate_limited_log ignores lines the log level filters out") {
    captured_log out;
    rate_limited_log limit("test: debug", 1, 10s);
    for (int i = 0; i < 5; ++i) limit.log(spdlog::level::debug, "test: hidden {}", i);
    CHECK(limit.suppressed_total() == 0);
    CHECK(out.count("test: hidden") == 0);
}

TEST_CASE("rate_limited_log refuses a zero burst or interval") {
    CHECK_THROWS_AS(rate_limited_log("x", 0), config_error);
    CHECK_THROWS_AS(rate_limited_log("x", 1, 0s), config_error);
}

TEST_CASE("a rate_limited_log destroyed mid-window writes its count") {
    captured_log out;
    {
        rate_limited_log limit("test: at exit", 1, 1h);
        for (int i = 0; i < 5; ++i) limit.warn("test: line {}", i);
        CHECK(out.count("suppressed") == 0);
    }
    CHECK(out.count("test: at exit: 4 more such lines suppressed") == 1);
}

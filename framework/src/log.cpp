#include "percore/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "percore/errors.hpp"
#include "percore/reactor.hpp"

namespace percore {

namespace {

// %* in the pattern: "shard N" on a reactor thread, "main" elsewhere.
class shard_flag final : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg&, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        auto* r = reactor::local_or_null();
        std::string text = r ? "shard " + std::to_string(r->shard_id()) : std::string("main");
        dest.append(text.data(), text.data() + text.size());
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<shard_flag>();
    }
};

std::shared_ptr<spdlog::logger> make_logger() {
    auto sink =
        std::make_shared<spdlog::sinks::stderr_color_sink_mt>(spdlog::color_mode::automatic);
    auto log = std::make_shared<spdlog::logger>("percore", sink);
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<shard_flag>('*').set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%*] %v");
    log->set_formatter(std::move(formatter));
    log->set_level(spdlog::level::info);
    log->flush_on(spdlog::level::info);
    return log;
}

}  // namespace

spdlog::logger& logger() {
    static std::shared_ptr<spdlog::logger> instance = make_logger();
    return *instance;
}

void set_log_level(std::string_view level) {
    auto parsed = spdlog::level::from_str(std::string(level));
    if (parsed == spdlog::level::off && level != "off") {
        throw config_error("unknown log level '" + std::string(level) +
                           "' (use trace, debug, info, warn, error, critical or off)");
    }
    logger().set_level(parsed);
}

rate_limited_log::rate_limited_log(std::string what, unsigned burst, clock::duration interval)
    : what_(std::move(what)), burst_(burst), interval_(interval) {
    if (burst_ == 0)
        throw config_error("rate_limited_log '" + what_ + "': burst must be at least 1");
    if (interval_ <= clock::duration::zero())
        throw config_error("rate_limited_log '" + what_ + "': interval must be positive");
}

rate_limited_log::~rate_limited_log() {
    try {
        write_summary(clock::now());
    } catch (...) {
        // A destructor: the count stays lost rather than ending the thread.
    }
}

void rate_limited_log::write_summary(clock::time_point now) {
    if (suppressed_ == 0) return;
    const auto seconds = std::chrono::duration<double>(now - window_start_).count();
    logger().log(suppressed_level_,
                 "{}: {} more such lines suppressed in the last {:.1f} s (at most {} per {:.1f} s "
                 "are written)",
                 what_, suppressed_, seconds, burst_,
                 std::chrono::duration<double>(interval_).count());
    suppressed_ = 0;
}

bool rate_limited_log::admit(spdlog::level::level_enum level, clock::time_point now) {
    if (!started_ || now - window_start_ >= interval_) {
        write_summary(now);
        started_ = true;
        window_start_ = now;
        in_window_ = 0;
        suppressed_ = 0;
        suppressed_level_ = spdlog::level::trace;
    }
    if (in_window_ < burst_) {
        ++in_window_;
        return true;
    }
    ++suppressed_;
    ++suppressed_total_;
    suppressed_level_ = std::max(suppressed_level_, level);
    return false;
}

}  // namespace percore

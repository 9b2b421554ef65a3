// Logging: spdlog, with the shard id in every line ("[shard 1]", or "[main]"
// off the shards) so interleaved output from many shards stays readable.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace percore {

// The process-wide logger (stderr). Safe from any thread.
spdlog::logger& logger();

// Sets the level by name: trace, debug, info, warn, error, critical, off.
// Throws config_error for anything else.
void set_log_level(std::string_view level);

// Rate limiting for one kind of line a client can trigger at will (a bad
// request, an idle timeout, an over-long input): without it a hostile client
// makes the server write thousands of lines a second through the one
// process-wide sink. In each window of `interval` the first `burst` lines are
// written and the rest only counted; the first line of a later window is
// preceded by one summary line with that count (as Seastar's
// logger::rate_limit does). The count of a flood that stops is written with
// the next such line, whenever that comes (no timer: nothing runs for a quiet
// limiter), or when the limiter is destroyed (a thread_local one: when its
// shard's thread ends), and is always readable from suppressed_total().
//
// Not thread-safe: one instance per shard, e.g. a function-local
// `static thread_local rate_limited_log limit("kv: idle timeouts");`.
class rate_limited_log {
  public:
    using clock = std::chrono::steady_clock;

    explicit rate_limited_log(std::string what, unsigned burst = 10,
                              clock::duration interval = std::chrono::seconds(5));
    // Writes the count of the lines suppressed in the last window, if any.
    ~rate_limited_log();
    rate_limited_log(const rate_limited_log&) = delete;
    rate_limited_log& operator=(const rate_limited_log&) = delete;

    // Writes the line if the limit allows (at `level`, if the logger's level
    // does: lines filtered out by the level are not counted).
    template <typename... Args>
    void log(spdlog::level::level_enum level, spdlog::format_string_t<Args...> format,
             Args&&... args) {
        if (!logger().should_log(level)) return;
        if (!admit(level, clock::now())) return;
        logger().log(level, format, std::forward<Args>(args)...);
    }
    template <typename... Args>
    void info(spdlog::format_string_t<Args...> format, Args&&... args) {
        log(spdlog::level::info, format, std::forward<Args>(args)...);
    }
    template <typename... Args>
    void warn(spdlog::format_string_t<Args...> format, Args&&... args) {
        log(spdlog::level::warn, format, std::forward<Args>(args)...);
    }
    template <typename... Args>
    void error(spdlog::format_string_t<Args...> format, Args&&... args) {
        log(spdlog::level::err, format, std::forward<Args>(args)...);
    }

    // Counts one event at `now`: true if its line may be written. When a
    // window with suppressed lines has ended, writes their summary line first.
    bool admit(spdlog::level::level_enum level, clock::time_point now);
    // Lines suppressed since construction.
    std::uint64_t suppressed_total() const noexcept { return suppressed_total_; }

  private:
    void write_summary(clock::time_point now);

    std::string what_;
    unsigned burst_;
    clock::duration interval_;
    clock::time_point window_start_{};
    bool started_ = false;
    unsigned in_window_ = 0;
    std::uint64_t suppressed_ = 0;  // in the current window
    std::uint64_t suppressed_total_ = 0;
    spdlog::level::level_enum suppressed_level_ = spdlog::level::trace;  // the highest suppressed
};

}  // namespace percore

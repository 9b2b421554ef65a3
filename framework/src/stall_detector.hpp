// The stall detector: a per-shard POSIX timer on the shard thread's CPU clock
// sends a signal every threshold/8 of CPU time; the handler notices when the
// reactor made no progress (no fiber switch, no loop turn) for the whole
// threshold and captures the running fiber's name, queue and backtrace. The
// reactor logs the report at its next turn (the handler may not log). A
// thread that sleeps uses no CPU time, so an idle shard gets no signals.
#pragma once

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace percore {
class reactor;
class task_queue;
}  // namespace percore

namespace percore::detail {

class stall_detector {
  public:
    stall_detector(reactor& r, std::chrono::milliseconds threshold);
    ~stall_detector();
    stall_detector(const stall_detector&) = delete;
    stall_detector& operator=(const stall_detector&) = delete;

    // Logs a captured stall (rate-limited). Cheap when there is none.
    void report_pending() {
        if (pending_.load(std::memory_order_acquire)) log_report();
    }
    // The signal handler's work: async-signal-safe only.
    void on_tick() noexcept;

  private:
    static constexpr int max_frames = 32;
    static constexpr std::size_t name_size = 104;

    void log_report();

    reactor& reactor_;
    std::int64_t threshold_ns_;
    timer_t timer_{};
    bool armed_ = false;

    // Handler state (only the handler touches it).
    std::uint64_t last_progress_ = ~std::uint64_t{0};
    std::int64_t last_tick_ns_ = 0;
    std::int64_t run_start_ns_ = 0;
    bool reported_ = false;
    bool emergency_written_ = false;

    // One captured stall, handed to the reactor through pending_.
    std::atomic<bool> pending_{false};
    std::atomic<std::uint64_t> detected_{0};
    void* frames_[max_frames];
    int depth_ = 0;
    std::int64_t stall_start_ns_ = 0;  // on the thread's CPU clock
    task_queue* queue_ = nullptr;
    char fiber_name_[name_size] = {};
    char queue_name_[name_size] = {};

    // Rate limit of the reactor's log lines.
    std::uint64_t accounted_ = 0;
    std::int64_t window_start_ns_ = 0;
    unsigned in_window_ = 0;
    std::uint64_t suppressed_ = 0;
};

}  // namespace percore::detail

#include "stall_detector.hpp"

#include <cxxabi.h>
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/scheduling.hpp"

namespace percore::detail {

namespace {

thread_local constinit stall_detector* tls_detector = nullptr;

constexpr int reports_per_window = 10;
constexpr std::int64_t window_ns = 60'000'000'000;

int stall_signal() {
    return SIGRTMIN + 7;
}

void on_signal(int, siginfo_t*, void*) {
    if (auto* d = tls_detector) d->on_tick();
}

std::int64_t cpu_now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1'000'000'000 + ts.tv_nsec;
}

// Async-signal-safe (no allocation): called in the handler.
void copy_name(char* to, std::size_t size, const char* from) noexcept {
    std::size_t n = 0;
    while (n + 1 < size && from[n] != '\0') ++n;
    std::memcpy(to, from, n);
    to[n] = '\0';
}

// Async-signal-safe output for a fiber that never yields again.
void write_text(const char* text) noexcept {
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, text, std::strlen(text));
}

void write_number(std::uint64_t v) noexcept {
    char buf[24];
    int i = sizeof(buf);
    buf[--i] = '\0';
    do {
        buf[--i] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v > 0 && i > 0);
    write_text(buf + i);
}

// "binary(_ZN3foo3barEv+0x12) [0x...]" -> "binary(foo::bar()+0x12) [0x...]".
std::string demangle_frame(const char* line) {
    std::string text = line;
    auto open = text.find('(');
    auto plus = text.find('+', open == std::string::npos ? 0 : open);
    if (open == std::string::npos || plus == std::string::npos || plus <= open + 1) return text;
    std::string mangled = text.substr(open + 1, plus - open - 1);
    int status = 0;
    char* plain = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
    if (status == 0 && plain) {
        text = text.substr(0, open + 1) + plain + text.substr(plus);
    }
    std::free(plain);
    return text;
}

}  // namespace

stall_detector::stall_detector(reactor& r, std::chrono::milliseconds threshold)
    : reactor_(r),
      threshold_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(threshold).count()) {
    static std::once_flag installed;
    std::call_once(installed, [] {
        // backtrace() loads libgcc on first use (it allocates): not in the handler.
        void* warm[2];
        backtrace(warm, 2);
        struct sigaction action {};
        action.sa_sigaction = &on_signal;
        action.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&action.sa_mask);
        sigaction(stall_signal(), &action, nullptr);
    });
    sigevent event{};
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = stall_signal();
    event._sigev_un._tid = static_cast<pid_t>(gettid());
    // The thread's CPU clock: a shard that sleeps or is descheduled by a busy
    // machine is not stalled.
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &event, &timer_) != 0) {
        logger().warn("shard {}: no stall detector: timer_create failed: {}", r.shard_id(),
                      std::strerror(errno));
        return;
    }
    tls_detector = this;
    std::int64_t period = threshold_ns_ / 8 > 1'000'000 ? threshold_ns_ / 8 : 1'000'000;
    itimerspec spec{};
    spec.it_interval.tv_sec = period / 1'000'000'000;
    spec.it_interval.tv_nsec = period % 1'000'000'000;
    spec.it_value = spec.it_interval;
    if (timer_settime(timer_, 0, &spec, nullptr) != 0) {
        logger().warn("shard {}: no stall detector: timer_settime failed: {}", r.shard_id(),
                      std::strerror(errno));
        tls_detector = nullptr;
        timer_delete(timer_);
        return;
    }
    armed_ = true;
}

stall_detector::~stall_detector() {
    if (armed_) timer_delete(timer_);
    if (tls_detector == this) tls_detector = nullptr;
}

void stall_detector::on_tick() noexcept {
    int saved_errno = errno;
    std::int64_t now = cpu_now_ns();
    std::uint64_t progress = reactor_.progress();
    if (progress != last_progress_ || reactor_.sleeping()) {
        // Something ran since the last tick: the current run began after it.
        last_progress_ = progress;
        run_start_ns_ = last_tick_ns_ == 0 ? now : (last_tick_ns_ + now) / 2;
        reported_ = false;
        emergency_written_ = false;
    } else {
        std::int64_t ran = now - run_start_ns_;
        if (!reported_ && ran >= threshold_ns_) {
            reported_ = true;
            detected_.fetch_add(1, std::memory_order_relaxed);
            if (!pending_.load(std::memory_order_relaxed)) {
                depth_ = backtrace(frames_, max_frames);
                stall_start_ns_ = run_start_ns_;
                fiber_base* f = reactor_.current();
                queue_ = f ? f->queue_ : nullptr;
                // By reference, never `f ? f->name() : std::string()`: that
                // copies the name (malloc) inside the signal handler.
                copy_name(fiber_name_, name_size, f ? f->name().c_str() : "");
                copy_name(queue_name_, name_size, queue_ ? queue_->name().c_str() : "");
                pending_.store(true, std::memory_order_release);
            }
        } else if (reported_ && !emergency_written_ && ran >= 1'000'000'000 &&
                   ran >= 20 * threshold_ns_) {
            // It may never yield: say so now, as the handler can.
            emergency_written_ = true;
            write_text("percore: shard ");
            write_number(reactor_.shard_id());
            write_text(": fiber '");
            write_text(fiber_name_);
            write_text("' has run for ");
            write_number(static_cast<std::uint64_t>(ran / 1'000'000));
            write_text(" ms of CPU time without yielding; backtrace:\n");
            void* frames[max_frames];
            int depth = backtrace(frames, max_frames);
            backtrace_symbols_fd(frames, depth, STDERR_FILENO);
        }
    }
    last_tick_ns_ = now;
    errno = saved_errno;
}

void stall_detector::log_report() {
    int depth = depth_;
    // The first turn after the stall: now is about when it ended.
    std::uint64_t ran_ms = static_cast<std::uint64_t>((cpu_now_ns() - stall_start_ns_) / 1'000'000);
    std::string fiber = fiber_name_;
    std::string queue = queue_name_;
    task_queue* q = queue_;
    char** symbols = backtrace_symbols(frames_, depth);
    std::string trace;
    for (int i = 0; i < depth; ++i) {
        trace += "\n  #" + std::to_string(i) + " " +
                 (symbols ? demangle_frame(symbols[i])
                          : std::to_string(reinterpret_cast<std::uintptr_t>(frames_[i])));
    }
    std::free(symbols);
    pending_.store(false, std::memory_order_release);

    std::uint64_t detected = detected_.load(std::memory_order_relaxed);
    reactor_.stats().stalls += detected - accounted_;
    accounted_ = detected;
    if (q) ++q->stats_.stalls;

    std::int64_t now =
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch())
            .count();
    if (now - window_start_ns_ >= window_ns) {
        window_start_ns_ = now;
        in_window_ = 0;
    }
    if (++in_window_ > reports_per_window) {
        ++suppressed_;
        return;
    }
    std::string suppressed;
    if (suppressed_ > 0) {
        suppressed = " (" + std::to_string(suppressed_) + " earlier reports suppressed)";
        suppressed_ = 0;
    }
    if (fiber.empty()) fiber = "(reactor, no fiber)";
    logger().warn(
        "stall: fiber '{}' in task queue '{}' ran for about {} ms of CPU time without "
        "yielding (threshold {} ms){}; backtrace:{}",
        fiber, queue.empty() ? "-" : queue, ran_ms, threshold_ns_ / 1'000'000, suppressed, trace);
}

}  // namespace percore::detail

// Timers on the current shard, and sleeping fibers. A timer's callback runs on
// the reactor between fibers, so it must be short and must not suspend: to do
// real work on expiry, make a fiber ready from it (as sleep_for does).
#pragma once

#include <cstddef>
#include <functional>

#include "percore/clock.hpp"

namespace percore {

namespace detail {
class timer_heap;
}

// A one-shot or periodic timer owned by the shard that arms it. Destroying an
// armed timer cancels it.
class timer {
  public:
    using callback = std::function<void()>;

    timer() = default;
    explicit timer(callback cb) : callback_(std::move(cb)) {}
    timer(const timer&) = delete;
    timer& operator=(const timer&) = delete;
    ~timer() { cancel(); }

    void set_callback(callback cb) { callback_ = std::move(cb); }

    // (Re)arms to fire once at `when` (immediately on the next reactor turn if past).
    void arm(time_point when);
    void arm(duration delay) { arm(clock::now() + delay); }
    // Fires every `period`, first after one period.
    void arm_periodic(duration period);
    // Returns true if the timer was armed.
    bool cancel() noexcept;

    bool armed() const noexcept { return heap_index_ != not_armed; }
    time_point deadline() const noexcept { return when_; }

  private:
    friend class detail::timer_heap;
    static constexpr std::size_t not_armed = ~std::size_t{0};

    callback callback_;
    time_point when_{};
    duration period_{0};
    std::size_t heap_index_ = not_armed;
};

// Suspends the calling fiber for at least `delay`.
void sleep_for(duration delay);
// Suspends the calling fiber until `deadline` has passed.
void sleep_until(time_point deadline);

}  // namespace percore

// A FIFO of fibers waiting for something on one shard; the building block of
// the sync primitives. Waiter nodes live on the waiting fiber's stack and
// unlink themselves on timeout or shutdown, so no stale wake-up remains.
#pragma once

#include <cstddef>
#include <optional>

#include "percore/clock.hpp"
#include "percore/detail/fiber_base.hpp"

namespace percore::detail {

// Waiter nodes on the waiting fiber's stack are the design (wait() unlinks
// its node before returning, on every path); GCC 12's -Wdangling-pointer
// sees a local's address stored in the list and cannot see the unlinking.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
class wait_list {
  public:
    struct waiter {
        fiber_base* fiber = nullptr;
        waiter* prev = nullptr;
        waiter* next = nullptr;
        std::size_t units = 1;  // what the waiter asks for (semaphore units)
        bool woken = false;
    };

    bool empty() const noexcept { return head_ == nullptr; }
    waiter* front() const noexcept { return head_; }

    // Suspends the current fiber in the list until wake() reaches it (true)
    // or the deadline passes (false). Throws shutdown_error if the shard stops.
    bool wait(std::size_t units = 1, std::optional<time_point> deadline = std::nullopt) {
        waiter w;
        w.fiber = current_fiber();
        w.units = units;
        push_back(&w);
        struct unlink_guard {
            wait_list* list;
            waiter* w;
            ~unlink_guard() {
                if (!w->woken) list->remove(w);
            }
        } guard{this, &w};
        while (!w.woken) {
            if (deadline) {
                if (!suspend_until(*deadline)) return w.woken;
            } else {
                suspend();
            }
        }
        return true;
    }

    // Wakes the first waiter; false if there was none.
    bool wake_one() noexcept {
        waiter* w = head_;
        if (!w) return false;
        remove(w);
        w->woken = true;
        make_ready(w->fiber);
        return true;
    }

    void wake_all() noexcept {
        while (wake_one()) {
        }
    }

  private:
    void push_back(waiter* w) noexcept {
        w->prev = tail_;
        w->next = nullptr;
        if (tail_) {
            tail_->next = w;
        } else {
            head_ = w;
        }
        tail_ = w;
    }
    void remove(waiter* w) noexcept {
        (w->prev ? w->prev->next : head_) = w->next;
        (w->next ? w->next->prev : tail_) = w->prev;
        w->prev = w->next = nullptr;
    }

    waiter* head_ = nullptr;
    waiter* tail_ = nullptr;
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace percore::detail

// Fiber synchronisation on one shard: mutex, condition variable, semaphore
// and gate. They suspend fibers, never the thread, and are not for use across
// shards (each shard has its own; cross-shard work goes through submit_to).
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>

#include "percore/clock.hpp"
#include "percore/detail/wait_list.hpp"
#include "percore/errors.hpp"

namespace percore {

// A FIFO-fair mutex: unlock hands ownership to the longest waiter. Works with
// std::unique_lock / std::lock_guard.
class mutex {
  public:
    void lock();
    bool try_lock() noexcept;
    // Gives up at the deadline (returns false).
    bool try_lock_until(time_point deadline);
    void unlock() noexcept;

  private:
    bool locked_ = false;
    detail::wait_list waiters_;
};

enum class cv_status { no_timeout, timeout };

// Waits for a condition guarded by a percore::mutex.
class condition_variable {
  public:
    void wait(std::unique_lock<mutex>& lock);
    template <typename Predicate>
    void wait(std::unique_lock<mutex>& lock, Predicate ready) {
        while (!ready()) wait(lock);
    }
    cv_status wait_until(std::unique_lock<mutex>& lock, time_point deadline);
    template <typename Predicate>
    bool wait_until(std::unique_lock<mutex>& lock, time_point deadline, Predicate ready) {
        while (!ready()) {
            if (wait_until(lock, deadline) == cv_status::timeout) return ready();
        }
        return true;
    }
    cv_status wait_for(std::unique_lock<mutex>& lock, duration timeout) {
        return wait_until(lock, clock::now() + timeout);
    }

    void notify_one() noexcept { waiters_.wake_one(); }
    void notify_all() noexcept { waiters_.wake_all(); }

  private:
    detail::wait_list waiters_;
};

// A counting semaphore with FIFO order: a large request at the head is not
// starved by small ones behind it.
class semaphore {
  public:
    explicit semaphore(std::size_t units) : available_(units) {}

    void wait(std::size_t units = 1);
    // False (and nothing taken) if the deadline passes first.
    bool wait_until(time_point deadline, std::size_t units = 1);
    bool wait_for(duration timeout, std::size_t units = 1) {
        return wait_until(clock::now() + timeout, units);
    }
    bool try_wait(std::size_t units = 1) noexcept;
    void signal(std::size_t units = 1) noexcept;

    std::size_t available() const noexcept { return available_; }
    bool has_waiters() const noexcept { return !waiters_.empty(); }

  private:
    void wake_waiters() noexcept;

    std::size_t available_;
    detail::wait_list waiters_;
};

// Tracks work in progress so shutdown can wait for it: enter() before the
// work, leave() after; close() refuses new entries and waits until the last
// holder leaves.
class gate {
  public:
    ~gate();

    // Throws gate_closed_error once close() began.
    void enter();
    void leave() noexcept;
    // Waits (suspends) until every holder has left. Call once.
    void close();

    bool is_closed() const noexcept { return closed_; }
    std::size_t count() const noexcept { return count_; }

    // RAII: enter in the constructor, leave in the destructor.
    class holder {
      public:
        explicit holder(gate& g) : gate_(&g) { g.enter(); }
        holder(holder&& o) noexcept : gate_(std::exchange(o.gate_, nullptr)) {}
        holder(const holder&) = delete;
        ~holder() {
            if (gate_) gate_->leave();
        }

      private:
        gate* gate_;
    };

  private:
    std::size_t count_ = 0;
    bool closed_ = false;
    detail::wait_list closing_;
};

}  // namespace percore

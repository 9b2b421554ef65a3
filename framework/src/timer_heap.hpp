// The shard's armed timers: a binary min-heap of timer pointers, each timer
// knowing its index so cancel() is O(log n) with no search and no allocation.
// Each entry carries its timer's deadline: the comparisons of a sift read the
// heap's own contiguous memory, not the timers, which live on fiber stacks
// all over memory (1 000 connections' read deadlines, perf/micro_fiber.cpp
// timer_rearm_cold).
#pragma once

#include <cstddef>
#include <vector>

#include "percore/clock.hpp"
#include "percore/timer.hpp"

namespace percore::detail {

class timer_heap {
  public:
    void insert(timer* t);
    void remove(timer* t) noexcept;
    bool empty() const noexcept { return heap_.empty(); }
    time_point next_deadline() const noexcept { return heap_.front().when; }
    // Runs the callbacks of every timer due at `now`; returns how many fired.
    std::size_t fire_expired(time_point now);

    static time_point& when(timer* t) noexcept { return t->when_; }
    static duration& period(timer* t) noexcept { return t->period_; }

  private:
    void sift_up(std::size_t i) noexcept;
    void sift_down(std::size_t i) noexcept;
    struct entry {
        time_point when;  // == timer->when_
        timer* owner;
    };
    void place(std::size_t i, entry e) noexcept {
        heap_[i] = e;
        e.owner->heap_index_ = i;
    }

    std::vector<entry> heap_;
};

}  // namespace percore::detail

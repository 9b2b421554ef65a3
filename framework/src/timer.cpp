#include "percore/timer.hpp"

#include "percore/detail/fiber_base.hpp"
#include "percore/reactor.hpp"
#include "timer_heap.hpp"

namespace percore {

namespace detail {

void timer_heap::insert(timer* t) {
    heap_.push_back({t->when_, t});
    place(heap_.size() - 1, heap_.back());
    sift_up(heap_.size() - 1);
}

void timer_heap::remove(timer* t) noexcept {
    std::size_t i = t->heap_index_;
    t->heap_index_ = timer::not_armed;
    entry last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) return;
    place(i, last);
    sift_up(i);
    sift_down(last.owner->heap_index_);
}

void timer_heap::sift_up(std::size_t i) noexcept {
    entry e = heap_[i];
    while (i > 0) {
        std::size_t parent = (i - 1) / 2;
        if (heap_[parent].when <= e.when) break;
        place(i, heap_[parent]);
        i = parent;
    }
    place(i, e);
}

void timer_heap::sift_down(std::size_t i) noexcept {
    entry e = heap_[i];
    std::size_t n = heap_.size();
    for (;;) {
        std::size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_[child + 1].when < heap_[child].when) ++child;
        if (e.when <= heap_[child].when) break;
        place(i, heap_[child]);
        i = child;
    }
    place(i, e);
}

std::size_t timer_heap::fire_expired(time_point now) {
    std::size_t fired = 0;
    while (!heap_.empty() && heap_.front().when <= now) {
        timer* t = heap_.front().owner;
        remove(t);
        if (t->period_.count() > 0) {
            t->when_ += t->period_;
            if (t->when_ <= now) t->when_ = now + t->period_;  // fell behind: skip, don't burst
            insert(t);
        }
        ++fired;
        // The callback may cancel, re-arm or destroy the timer: touch nothing after.
        if (t->callback_) t->callback_();
    }
    return fired;
}

}  // namespace detail

void timer::arm(time_point when) {
    auto& heap = reactor::local().timers();
    if (armed()) heap.remove(this);
    when_ = when;
    period_ = duration::zero();
    heap.insert(this);
}

void timer::arm_periodic(duration period) {
    arm(clock::now() + period);
    period_ = period;
}

bool timer::cancel() noexcept {
    if (!armed()) return false;
    reactor::local().timers().remove(this);
    return true;
}

void sleep_until(time_point deadline) {
    while (clock::now() < deadline) detail::suspend_until(deadline);
}

void sleep_for(duration delay) {
    sleep_until(clock::now() + delay);
}

}  // namespace percore

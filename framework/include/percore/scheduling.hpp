// Task queues: the unit of CPU scheduling on a shard. Every fiber belongs to
// one; the reactor picks among runnable queues, and runs a queue's fibers in
// order. Fibers not spawned into a queue run in the shard's default queue.
#pragma once

#include <cstdint>
#include <string>

#include "percore/detail/fiber_base.hpp"

namespace percore {

class reactor;

// A FIFO of runnable fibers with a scheduling identity (name, shares).
class task_queue {
public:
    explicit task_queue(std::string name, unsigned shares = 1000)
        : name_(std::move(name)), shares_(shares) {}
    task_queue(const task_queue&) = delete;
    task_queue& operator=(const task_queue&) = delete;

    const std::string& name() const noexcept { return name_; }
    unsigned shares() const noexcept { return shares_; }
    bool empty() const noexcept { return head_ == nullptr; }

    // Appends a runnable fiber (reactor-internal).
    void push(detail::fiber_base* fiber) noexcept {
        fiber->next_ready_ = nullptr;
        if (tail_) {
            tail_->next_ready_ = fiber;
        } else {
            head_ = fiber;
        }
        tail_ = fiber;
    }
    // Takes the next runnable fiber, or nullptr (reactor-internal).
    detail::fiber_base* pop() noexcept {
        auto* f = head_;
        if (f) {
            head_ = f->next_ready_;
            if (!head_) tail_ = nullptr;
        }
        return f;
    }

private:
    std::string name_;
    unsigned shares_;
    detail::fiber_base* head_ = nullptr;
    detail::fiber_base* tail_ = nullptr;
};

}  // namespace percore

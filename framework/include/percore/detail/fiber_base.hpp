// The fiber control block and the primitives every waiting object is built
// on: suspend the current fiber, make a fiber ready again. Not for app code;
// app code uses spawn(), future::get() and the sync primitives.
#pragma once

#include <boost/context/detail/fcontext.hpp>

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "percore/clock.hpp"

namespace percore {

class task_queue;
class reactor;

namespace detail {

// A fiber's stack: usable memory [base, base + size); a guard page below base
// (for pooled stacks) turns an overflow into a crash, not a corruption.
struct stack_memory {
    void* mapping = nullptr;
    std::size_t mapping_size = 0;
    void* base = nullptr;
    std::size_t size = 0;
};

enum class fiber_state : std::uint8_t { ready, running, suspended, done };

// The control block. It lives at the top of the fiber's own stack, so a spawn
// costs no heap allocation beyond the stack (pooled) and the future's state.
class fiber_base {
  public:
    fiber_base() = default;
    fiber_base(const fiber_base&) = delete;
    fiber_base& operator=(const fiber_base&) = delete;

    // The body; must not throw (spawn's wrapper routes exceptions to the future).
    virtual void run() noexcept = 0;

    const std::string& name() const noexcept { return name_; }
    task_queue* queue() const noexcept { return queue_; }
    fiber_state state() const noexcept { return state_; }

    // Destroyed by the reactor (destroy_fiber) once run() returned.
    virtual ~fiber_base() = default;

    // Scheduling state, owned by the reactor and the fiber module.
    boost::context::detail::fcontext_t context_ = nullptr;
    stack_memory stack_;
    task_queue* queue_ = nullptr;
    fiber_base* next_ready_ = nullptr;  // intrusive link in its queue's ready list
    fiber_base* prev_live_ = nullptr;   // intrusive links in the reactor's list of
    fiber_base* next_live_ = nullptr;   //   live fibers (for shutdown)
    fiber_state state_ = fiber_state::ready;
    bool interrupted_ = false;          // resume by throwing shutdown_error
    bool timed_out_ = false;            // set by suspend_until's timer
    std::uint8_t uninterruptible_ = 0;  // waiting for the kernel: may not unwind
    std::int64_t ready_at_ns_ = 0;      // when made ready, if its queue delay is sampled
    std::string name_;
    void* asan_fake_stack_ = nullptr;
    // Called when this fiber is about to block in suspend(): lets a fiber that
    // serves a queue (smp.cpp's request runner) hand its role to another
    // before it waits. Null for almost every fiber.
    void (*on_block_)(fiber_base* self) noexcept = nullptr;
};

// The fiber running on this thread, or nullptr on the reactor's own stack.
fiber_base* current_fiber() noexcept;

// Suspends the current fiber until make_ready() is called on it. Throws
// shutdown_error if the shard stops meanwhile.
void suspend();

// Like suspend(), but until the deadline too; returns false when the deadline
// woke it. The caller must then unregister from whatever would wake it.
bool suspend_until(time_point deadline);

// Suspends and cannot be interrupted: for waits on the kernel, which owns
// memory of the fiber's until the completion arrives.
void suspend_uninterruptible();

// Makes a suspended fiber runnable. Waking a fiber that is not suspended is a
// no-op, so a wake racing a timeout is harmless.
void make_ready(fiber_base* fiber) noexcept;

// Resumes a suspended fiber by throwing shutdown_error at its suspension point.
void interrupt(fiber_base* fiber) noexcept;

// Allocates a stack (pooled for the default size), places Body at its top and
// queues the fiber. Defined in fiber.cpp for the non-template part.
stack_memory allocate_stack(std::size_t size);
void release_stack(const stack_memory& stack) noexcept;
fiber_base* finish_create(fiber_base* fiber, std::string_view name, stack_memory stack,
                          task_queue* queue);

template <typename Body, typename... Args>
fiber_base* create_fiber(std::string_view name, std::size_t stack_size, task_queue* queue,
                         Args&&... args) {
    static_assert(alignof(Body) <= 64, "fiber body over-aligned");
    stack_memory stack = allocate_stack(stack_size);
    auto top = reinterpret_cast<std::uintptr_t>(stack.base) + stack.size;
    auto place = (top - sizeof(Body)) & ~std::uintptr_t{63};
    Body* body;
    try {
        body = new (reinterpret_cast<void*>(place)) Body(std::forward<Args>(args)...);
    } catch (...) {
        release_stack(stack);
        throw;
    }
    stack.size = place - reinterpret_cast<std::uintptr_t>(stack.base);
    return finish_create(body, name, stack, queue);
}

}  // namespace detail
}  // namespace percore

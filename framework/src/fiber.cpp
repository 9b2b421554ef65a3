// Fiber creation, switching and suspension. The reactor's own stack is the
// hub: a fiber runs until it suspends, yields or ends, then jumps back to the
// reactor, which picks the next one.
#include "percore/fiber.hpp"

#include <string>

#include "asan.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/timer.hpp"
#include "stack_pool.hpp"

namespace percore {

using boost::context::detail::jump_fcontext;
using boost::context::detail::make_fcontext;
using boost::context::detail::transfer_t;

namespace detail {

stack_memory allocate_stack(std::size_t size) { return reactor::local().stacks().allocate(size); }

void release_stack(const stack_memory& stack) noexcept {
    reactor::local().stacks().release(stack);
}

fiber_base* finish_create(fiber_base* fiber, std::string_view name, stack_memory stack,
                          task_queue* queue) {
    auto& r = reactor::local();
    fiber->stack_ = stack;
    fiber->name_.assign(name);
    fiber->queue_ = queue ? queue : &r.default_queue();
    void* top = static_cast<char*>(stack.base) + stack.size;
    fiber->context_ = make_fcontext(top, stack.size, &reactor::fiber_entry);
    fiber->state_ = fiber_state::ready;
    r.on_fiber_created(fiber);
    r.schedule(fiber);
    return fiber;
}

void destroy_fiber(fiber_base* fiber) noexcept {
    stack_memory stack = fiber->stack_;
    fiber->~fiber_base();
    release_stack(stack);
}

fiber_base* current_fiber() noexcept {
    auto* r = reactor::local_or_null();
    return r ? r->current() : nullptr;
}

namespace {
fiber_base* require_fiber(const char* what) {
    fiber_base* f = current_fiber();
    if (!f) throw std::logic_error(std::string(what) + " called outside a fiber");
    return f;
}

[[noreturn]] void throw_interrupted(fiber_base* f) {
    f->interrupted_ = false;
    throw shutdown_error("shard " + std::to_string(this_shard_id()) + " is stopping (fiber '" +
                         f->name() + "' interrupted)");
}
}  // namespace

void suspend() {
    fiber_base* f = require_fiber("suspend");
    if (f->interrupted_) throw_interrupted(f);
    f->state_ = fiber_state::suspended;
    reactor::local().switch_to_reactor(f);
    if (f->interrupted_) throw_interrupted(f);
}

void suspend_uninterruptible() {
    fiber_base* f = require_fiber("suspend");
    ++f->uninterruptible_;
    f->state_ = fiber_state::suspended;
    reactor::local().switch_to_reactor(f);
    --f->uninterruptible_;
}

bool suspend_until(time_point deadline) {
    fiber_base* f = require_fiber("suspend_until");
    f->timed_out_ = false;
    timer t([f] {
        f->timed_out_ = true;
        make_ready(f);
    });
    t.arm(deadline);
    suspend();
    bool timed_out = f->timed_out_;
    f->timed_out_ = false;
    return !timed_out;
}

void make_ready(fiber_base* fiber) noexcept {
    if (fiber->state_ != fiber_state::suspended) return;
    fiber->state_ = fiber_state::ready;
    reactor::local().schedule(fiber);
}

void interrupt(fiber_base* fiber) noexcept {
    if (fiber->state_ == fiber_state::done) return;
    fiber->interrupted_ = true;
    if (fiber->uninterruptible_ == 0) make_ready(fiber);
}

}  // namespace detail

void yield() {
    detail::fiber_base* f = detail::require_fiber("yield");
    auto& r = reactor::local();
    f->state_ = detail::fiber_state::ready;
    r.schedule(f);
    r.switch_to_reactor(f);
    if (f->interrupted_) detail::throw_interrupted(f);
}

bool need_preempt() noexcept {
    auto* r = reactor::local_or_null();
    return r && r->need_preempt();
}

void maybe_yield() {
    if (need_preempt()) yield();
}

// --- the switch itself -------------------------------------------------------

void reactor::resume(detail::fiber_base* fiber) {
    current_ = fiber;
    fiber->state_ = detail::fiber_state::running;
    ++stats_.tasks_run;
    void* fake_stack = nullptr;
    detail::asan_start_switch(&fake_stack, fiber->stack_.base, fiber->stack_.size);
    transfer_t t = jump_fcontext(fiber->context_, fiber);
    detail::asan_finish_switch(fake_stack, nullptr, nullptr);
    current_ = nullptr;
    if (fiber->state_ == detail::fiber_state::done) {
        unlink_live(fiber);
        detail::destroy_fiber(fiber);
    } else {
        fiber->context_ = t.fctx;
    }
}

void reactor::switch_to_reactor(detail::fiber_base* from) {
    detail::asan_start_switch(&from->asan_fake_stack_, main_stack_bottom_, main_stack_size_);
    transfer_t t = jump_fcontext(main_context_, nullptr);
    detail::asan_finish_switch(from->asan_fake_stack_, nullptr, nullptr);
    main_context_ = t.fctx;
}

void reactor::fiber_entry(transfer_t t) {
    auto* fiber = static_cast<detail::fiber_base*>(t.data);
    reactor& r = local();
    detail::asan_finish_switch(nullptr, &r.main_stack_bottom_, &r.main_stack_size_);
    r.main_context_ = t.fctx;
    fiber->run();
    fiber->state_ = detail::fiber_state::done;
    // A null fake-stack pointer tells ASan this stack is finished for good.
    detail::asan_start_switch(nullptr, r.main_stack_bottom_, r.main_stack_size_);
    jump_fcontext(r.main_context_, fiber);
    __builtin_unreachable();
}

}  // namespace percore

// Fiber creation, switching and suspension. A fiber runs until it suspends,
// yields or ends, then jumps straight to the next ready fiber of its task
// queue (or of the queue the scheduler picks), and back to the reactor's own
// stack only when nothing is ready or the preemption alarm fired.
#include "percore/fiber.hpp"

#include <string>

#include "asan.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/timer.hpp"
#include "stack_pool.hpp"

namespace percore {

using boost::context::detail::fcontext_t;
using boost::context::detail::make_fcontext;
using boost::context::detail::transfer_t;

// switch_context(save, to, finished) stores the running context in *save,
// resumes `to`, and, once something switches back, returns the `finished`
// argument of that switch: the fiber that ended and left for here (its stack
// cannot be freed while it runs on it), or nullptr. A context made by
// make_fcontext starts in reactor::fiber_entry, whose transfer_t gives the
// same through entry_argument().
#if defined(__x86_64__) && defined(__linux__)
// Boost.Context's jump_fcontext with the same frame layout (so contexts from
// make_fcontext start through it), but
// - it stores the leaving context itself instead of returning it for the
//   arriving side to store;
// - it leaves by `ret`, not by `jmp *%r8`: the call into it pushed a return
//   address onto the CPU's return-stack predictor, and every switch of a
//   fiber comes back to this same call site, so `ret` is predicted and the
//   returns after it stay matched; with the jump each switch mispredicted
//   the next two returns (27 -> 20 ns per switch here);
// - it does not save and restore MXCSR and the x87 control word, which cost
//   about a fifth of a switch: the fibers of a shard share the thread's
//   floating-point environment.
extern "C" void* percore_switch_context(fcontext_t* save, fcontext_t to, void* finished);
asm(R"(
    .text
    .globl percore_switch_context
    .hidden percore_switch_context
    .type percore_switch_context, @function
    .align 16
percore_switch_context:
    leaq -0x38(%rsp), %rsp
    movq %r12, 0x8(%rsp)
    movq %r13, 0x10(%rsp)
    movq %r14, 0x18(%rsp)
    movq %r15, 0x20(%rsp)
    movq %rbx, 0x28(%rsp)
    movq %rbp, 0x30(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    movq 0x8(%rsp), %r12
    movq 0x10(%rsp), %r13
    movq 0x18(%rsp), %r14
    movq 0x20(%rsp), %r15
    movq 0x28(%rsp), %rbx
    movq 0x30(%rsp), %rbp
    leaq 0x38(%rsp), %rsp
    movq %rdx, %rax
    movq %rdx, %rsi
    ret
    .size percore_switch_context, .-percore_switch_context
)");

namespace {
inline void* switch_context(fcontext_t* save, fcontext_t to, void* finished) {
    return percore_switch_context(save, to, finished);
}
// A new context's entry function gets `finished` as the transfer's data.
inline void* entry_argument(transfer_t t) {
    return t.data;
}
}  // namespace
#else
// Elsewhere Boost's jump_fcontext, which returns the left context to the
// arriving side: the leaving side passes where to store it.
namespace {
struct switch_record {
    fcontext_t* save;
    void* finished;
};
inline void* complete_switch(transfer_t t) {
    auto* record = static_cast<switch_record*>(t.data);  // on the left stack, still intact
    *record->save = t.fctx;
    return record->finished;
}
inline void* switch_context(fcontext_t* save, fcontext_t to, void* finished) {
    switch_record record{save, finished};
    return complete_switch(boost::context::detail::jump_fcontext(to, &record));
}
inline void* entry_argument(transfer_t t) {
    return complete_switch(t);
}
}  // namespace
#endif

namespace detail {

stack_memory allocate_stack(std::size_t size) {
    return reactor::local().stacks().allocate(size);
}

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
    auto* r = local_reactor;
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
    if (f->on_block_) [[unlikely]]
        f->on_block_(f);
    f->state_ = fiber_state::suspended;
    reactor::local().switch_out(f);
    if (f->interrupted_) throw_interrupted(f);
}

void suspend_uninterruptible() {
    fiber_base* f = require_fiber("suspend");
    if (f->on_block_) [[unlikely]]
        f->on_block_(f);
    ++f->uninterruptible_;
    f->state_ = fiber_state::suspended;
    reactor::local().switch_out(f);
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
    // Start loading what its resumption reads first: the registers the switch
    // saved and the frames above them (its suspension's call chain). With a
    // thousand connections' fibers woken by one batch of completions, their
    // stacks are cold; loaded now, they arrive while the others run, instead
    // of each switch waiting for its own misses (1000 connections, pipeline
    // 1: 0.92x kv's CPU per request). Here and not in the switch, so a
    // yield among hot fibers pays nothing.
    const char* saved = static_cast<const char*>(fiber->context_);
    for (int line = 0; line < 8; ++line) __builtin_prefetch(saved + 64 * line);
    reactor::local().schedule(fiber);
}

void interrupt(fiber_base* fiber) noexcept {
    if (fiber->state_ == fiber_state::done) return;
    fiber->interrupted_ = true;
    if (fiber->uninterruptible_ == 0) make_ready(fiber);
}

}  // namespace detail

void yield() {
    reactor* r = detail::local_reactor;
    detail::fiber_base* f = r ? r->current() : nullptr;
    if (!f) [[unlikely]]
        detail::require_fiber("yield");
    f->state_ = detail::fiber_state::ready;
    r->schedule(f);
    r->switch_out(f);
    if (f->interrupted_) detail::throw_interrupted(f);
}

bool need_preempt() noexcept {
    auto* r = detail::local_reactor;
    return r && r->need_preempt();
}

void maybe_yield() {
    auto* r = detail::local_reactor;
    if (r && r->need_preempt()) yield();
}

// --- the switch itself -------------------------------------------------------
//
// A fiber that gives up the CPU jumps straight to the next ready fiber; it
// goes through the reactor only when nothing else is ready or the task quota
// is spent. A fiber that ended passes itself along, and the side that
// arrives frees it.

void reactor::jump(detail::fiber_base* from, detail::fiber_base* to) {
    switch_to(from, to, false);
}

// Inlined into switch_out: the path of every switch stays one call deep
// (yield -> switch_out -> the assembly).
[[gnu::always_inline]] inline void reactor::switch_to(detail::fiber_base* from,
                                                      detail::fiber_base* to, bool from_ended) {
    current_ = to;
    fcontext_t target = main_context_;
    const void* bottom = main_stack_bottom_;
    std::size_t size = main_stack_size_;
    if (to) {
        to->state_ = detail::fiber_state::running;
        ++stats_.tasks_run;
        target = to->context_;
        bottom = to->stack_.base;
        size = to->stack_.size;
        if (to->ready_at_ns_ != 0) [[unlikely]]
            record_delay(to);
    }
    fcontext_t* save = from ? &from->context_ : &main_context_;
    void** fake_stack = from ? &from->asan_fake_stack_ : &main_fake_stack_;
    detail::fiber_base* finished = nullptr;
    if (from_ended) {
        finished = from;
        fake_stack = nullptr;  // never coming back
    }
    detail::asan_start_switch(fake_stack, bottom, size);
    void* left = switch_context(save, target, finished);
    detail::asan_finish_switch(from ? from->asan_fake_stack_ : main_fake_stack_, nullptr, nullptr);
    if (left) [[unlikely]]
        destroy_finished(static_cast<detail::fiber_base*>(left));
}

void reactor::destroy_finished(detail::fiber_base* fiber) noexcept {
    unlink_live(fiber);
    detail::destroy_fiber(fiber);
}

[[gnu::always_inline]] inline void reactor::switch_out(detail::fiber_base* from, bool from_ended) {
    // No clock read here (but in the turn after a sleep): the preemption
    // alarm (need_preempt(), two loads) ends the quota, and queues are
    // compared only when the running one is empty or a latency-sensitive
    // one waits.
    detail::fiber_base* next = pick_next_fiber();
    if (next == from) {      // yielded with nobody else ready: carry on
        ++stats_.tasks_run;  // progress, for the stall detector
        from->state_ = detail::fiber_state::running;
        return;
    }
    switch_to(from, next, from_ended);
}

void reactor::fiber_entry(transfer_t t) {
    void* left = entry_argument(t);
    reactor& r = local();
    detail::asan_finish_switch(nullptr, nullptr, nullptr);
    if (left) r.destroy_finished(static_cast<detail::fiber_base*>(left));
    detail::fiber_base* self = r.current_;
    self->run();
    self->state_ = detail::fiber_state::done;
    r.switch_out(self, true);
    __builtin_unreachable();
}

}  // namespace percore

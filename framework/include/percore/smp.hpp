// Cross-shard calls: submit_to(shard, fn) runs fn in a fiber on another shard
// and hands its result (or exception) back as a future on the calling shard.
//
// On the target, one fiber per shard (the request runner) drains the inbound
// rings and runs each call inline, so a call that does not wait costs no
// fiber of its own. A call that waits (I/O, a lock, a nested submit_to)
// keeps the runner's stack: just before it blocks, the runner role passes to
// a fresh fiber, so the rings never stall behind a waiting call.
//
// The wire is one bounded SPSC ring (spsc_queue.hpp) per ordered pair of
// shards, carrying fixed-size messages (the callable and the reply travel
// inline, no heap allocation per message when they fit). The ring from A to B
// carries A's requests to B and A's replies to B's requests. Every shard has a
// poller that, once per reactor turn, publishes what its fibers staged (one
// tail store per ring per turn, not per message) and drains its inbound
// rings. A target asleep in io_uring is woken only after a publish, and only
// if it announced sleep: a busy target costs no system call.
//
// Back-pressure: a shard may have at most smp_credits() requests in flight to
// each other shard. A caller past that waits in submit_to (its fiber, not the
// thread) until a reply comes back; the reply is noticed by the caller's own
// poller, so no other thread ever touches the caller's fibers. Each ring
// holds two credits' worth of slots (requests one way + replies to the other
// way's requests), so staging into it can never fail: nothing is queued
// outside the rings and nothing is lost.
//
// Futures and promises never cross threads as objects in use: a promise is
// moved into the request, carried to the target and back untouched, and set
// on the caller's shard by the reply.
#pragma once

#include <cstddef>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "percore/detail/fiber_base.hpp"
#include "percore/fiber.hpp"
#include "percore/future.hpp"
#include "percore/reactor.hpp"
#include "percore/spsc_queue.hpp"

namespace percore {

// Requests one shard may have in flight to another before submit_to waits.
unsigned smp_credits() noexcept;

namespace detail {

// Hands a request's ring slot back (pops it) before the request runs: the
// call may wait, and the ring must move on meanwhile.
struct slot_release {
    void (*fn)(void* context) noexcept;
    void* context;
};

// One ring slot: a type-erased payload with an inline buffer. Payloads that
// do not fit (or are over-aligned) are boxed on the heap instead.
class alignas(cache_line_size) smp_message {
  public:
    static constexpr std::size_t size = 2 * cache_line_size;
    static constexpr std::size_t inline_size = size - 16;

    template <typename P, typename... A>
    smp_message(std::in_place_type_t<P>, bool is_reply, A&&... a) : is_reply_(is_reply) {
        if constexpr (fits_inline<P>) {
            new (storage_) P(std::forward<A>(a)...);
            op_ = &inline_op<P>;
        } else {
            P* boxed = new P(std::forward<A>(a)...);
            new (storage_) P*(boxed);
            op_ = &boxed_op<P>;
        }
    }
    smp_message(const smp_message&) = delete;
    smp_message& operator=(const smp_message&) = delete;
    // A message destroyed without run() or abandon() destroys its payload;
    // a promise in it then reports broken_promise.
    ~smp_message() {
        if (op_) op_(storage_, action::destroy, nullptr);
    }

    // Runs the payload on the receiving shard, then destroys it.
    void run() noexcept { std::exchange(op_, nullptr)(storage_, action::run, nullptr); }
    // Moves the payload onto the caller's stack, destroys this message, calls
    // `release` (which may pop the slot), then runs the payload: for requests,
    // whose call may suspend.
    void run_detached(slot_release release) noexcept {
        std::exchange(op_, nullptr)(storage_, action::run_detached, &release);
    }
    // For messages left in a ring once every shard stopped (single-threaded
    // then): a request fails its caller's future with shutdown_error, a
    // reply is delivered; then the payload is destroyed.
    void abandon() noexcept { std::exchange(op_, nullptr)(storage_, action::abandon, nullptr); }
    // Replies give a credit back to the receiving shard.
    bool is_reply() const noexcept { return is_reply_; }

  private:
    enum class action { run, run_detached, abandon, destroy };
    using op_fn = void (*)(std::byte* storage, action what, const slot_release* release) noexcept;

    template <typename P>
    static constexpr bool fits_inline = sizeof(P) <= inline_size && alignof(P) <= 16;

    template <typename P>
    static void apply(P& p, action what) noexcept {
        if (what == action::run) p.run();
        if (what == action::abandon) p.abandon();
    }
    template <typename P>
    static void inline_op(std::byte* storage, action what, const slot_release* release) noexcept {
        P* p = std::launder(reinterpret_cast<P*>(storage));
        if (what == action::run_detached) {
            static_assert(std::is_nothrow_move_constructible_v<P>);
            P local(std::move(*p));
            p->~P();
            release->fn(release->context);
            local.run();
            return;
        }
        apply(*p, what);
        p->~P();
    }
    template <typename P>
    static void boxed_op(std::byte* storage, action what, const slot_release* release) noexcept {
        P* p = *std::launder(reinterpret_cast<P**>(storage));
        if (what == action::run_detached) {
            release->fn(release->context);
            std::unique_ptr<P> owned(p);
            owned->run();
            return;
        }
        apply(*p, what);
        delete p;
    }

    op_fn op_ = nullptr;
    bool is_reply_ = false;
    alignas(16) std::byte storage_[inline_size];
};
static_assert(sizeof(smp_message) == smp_message::size);

// The calling shard's end of the mesh (smp.cpp). Throw std::logic_error
// outside a running set of shards.
// Takes one request credit toward `to`, waiting (suspending) while none is left.
void smp_acquire_credit(unsigned to);
// Gives back a credit taken by smp_acquire_credit when no request was sent.
void smp_return_credit(unsigned to) noexcept;
// The ring from this shard to `to`.
spsc_queue<smp_message>& smp_outbound(unsigned to);
// Called after staging into smp_outbound(to): publishes now if the batch is
// full, else at the end of this reactor turn.
void smp_staged(unsigned to) noexcept;
// Logs a broken credit invariant (a reply found no ring slot).
void smp_invariant_broken(const char* what) noexcept;

template <typename T>
struct is_future : std::false_type {};
template <typename T>
struct is_future<future<T>> : std::true_type {};

// Mesh lifetime, called by run_shards (runtime.cpp): create for `smp` shards
// before they start, attach each shard's poller on its thread before its
// loop runs, detach after, destroy once every shard thread ended.
void smp_mesh_create(unsigned smp);
void smp_attach(reactor& r);
void smp_detach(reactor& r) noexcept;
void smp_mesh_destroy() noexcept;

// Runs on the caller's shard: fulfils the promise. The promise is the last
// member so that a throwing value move leaves it untouched in the sender.
template <typename R>
struct smp_reply {
    using stored = std::conditional_t<std::is_void_v<R>, unit, R>;
    std::optional<stored> value;
    std::exception_ptr error;
    unsigned target;
    promise<R> reply;

    void run() noexcept {
        if (error) {
            reply.set_exception(std::move(error), "submit_to shard " + std::to_string(target));
            return;
        }
        try {
            if constexpr (std::is_void_v<R>) {
                reply.set_value();
            } else {
                reply.set_value(std::move(*value));
            }
        } catch (...) {
            reply.set_exception(std::current_exception());
        }
    }
    void abandon() noexcept { run(); }
};

// Stages the reply to `to` (the caller). Never waits: the request's credit
// reserved its slot.
template <typename R>
void smp_send_reply(unsigned to, promise<R>&& reply,
                    std::optional<typename smp_reply<R>::stored>&& value,
                    std::exception_ptr error) noexcept {
    auto& ring = smp_outbound(to);
    unsigned self = reactor::local().shard_id();
    bool staged = false;
    try {
        staged = ring.try_stage(std::in_place_type<smp_reply<R>>, true, std::move(value),
                                std::move(error), self, std::move(reply));
    } catch (...) {
        // Moving the value failed (or boxing it could not allocate): send the
        // failure instead.
        try {
            staged = ring.try_stage(std::in_place_type<smp_reply<R>>, true, std::nullopt,
                                    std::current_exception(), self, std::move(reply));
        } catch (...) {
            staged = false;
        }
    }
    if (!staged) {
        // The promise belongs to the caller's shard: leak it rather than
        // break it from this thread.
        smp_invariant_broken("no ring slot for a submit_to reply; its caller will wait forever");
        [[maybe_unused]] auto* leaked = new promise<R>(std::move(reply));
        return;
    }
    smp_staged(to);
}

// A call travelling to its target. Run there by the request runner fiber
// (smp.cpp), off the ring (run_detached): fn may suspend.
template <typename F, typename R>
struct smp_request {
    F fn;
    promise<R> reply;
    unsigned from;

    void run() noexcept {
        std::optional<typename smp_reply<R>::stored> value;
        std::exception_ptr error;
        try {
            if constexpr (std::is_void_v<R>) {
                fn();
                value.emplace();
            } else {
                value.emplace(fn());
            }
        } catch (...) {
            error = std::current_exception();
        }
        smp_send_reply<R>(from, std::move(reply), std::move(value), std::move(error));
    }
    void abandon() noexcept {
        reply.set_exception(std::make_exception_ptr(
            shutdown_error("submit_to: the target shard stopped before running the call")));
    }
};

}  // namespace detail

// Runs fn() in a fiber on `shard` (it may suspend, do I/O, call submit_to
// again) and returns a future for its result on the calling shard; an
// exception thrown by fn is rethrown by the future's get(). The callable is
// moved to the target, so it must own what it captures or point at things
// that outlive the call. On the calling shard it is just spawn(). Call from a
// fiber: with smp_credits() requests already in flight to `shard`, this
// suspends until one completes (back-pressure, nothing queued unbounded).
template <typename F>
auto submit_to(unsigned shard, F&& fn) -> future<std::invoke_result_t<std::decay_t<F>&>> {
    using fn_type = std::decay_t<F>;
    using R = std::invoke_result_t<fn_type&>;
    static_assert(std::is_nothrow_move_constructible_v<fn_type>,
                  "submit_to: the callable must be nothrow move constructible");
    static_assert(!detail::is_future<R>::value,
                  "submit_to: return a value, not a future (futures belong to one shard)");
    auto& local = reactor::local();
    if (shard == local.shard_id()) return spawn({.name = "submit_to"}, std::forward<F>(fn));
    if (shard >= local.shard_count()) {
        throw std::out_of_range("submit_to: no shard " + std::to_string(shard) + " (shard count " +
                                std::to_string(local.shard_count()) + ")");
    }
    detail::smp_acquire_credit(shard);
    struct credit_guard {  // gives the credit back unless the request is staged
        unsigned to;
        bool armed = true;
        ~credit_guard() {
            if (armed) detail::smp_return_credit(to);
        }
    } credit{shard};
    promise<R> reply;
    auto result = reply.get_future();
    if (!detail::smp_outbound(shard).try_stage(std::in_place_type<detail::smp_request<fn_type, R>>,
                                               false, fn_type(std::forward<F>(fn)),
                                               std::move(reply), local.shard_id())) {
        throw std::logic_error("submit_to: no ring slot toward shard " + std::to_string(shard) +
                               " despite a credit");
    }
    credit.armed = false;
    detail::smp_staged(shard);
    return result;
}

// Runs fn() on every shard (a copy each, concurrently) and waits for all. For
// a void fn returns nothing; otherwise the results indexed by shard. If any
// call threw, the first exception (by shard) is rethrown after all finished.
template <typename F>
auto invoke_on_all(F fn) {
    using R = std::invoke_result_t<F&>;
    std::vector<future<R>> calls;
    unsigned n = shard_count();
    calls.reserve(n);
    for (unsigned s = 0; s < n; ++s) calls.push_back(submit_to(s, F(fn)));
    return when_all(calls);
}

}  // namespace percore

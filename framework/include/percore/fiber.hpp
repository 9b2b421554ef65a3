// Fibers: cheap cooperative threads on the current shard. App code runs in
// them and reads like blocking code; a fiber suspends at I/O, timers, futures
// and locks, never blocking its shard's thread.
#pragma once

#include <cstddef>
#include <exception>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

#include "percore/detail/fiber_base.hpp"
#include "percore/future.hpp"

namespace percore {

class task_queue;

// How to start a fiber. stack_size 0 means the shard's default (pooled).
struct spawn_options {
    std::string_view name = "fiber";
    std::size_t stack_size = 0;
    task_queue* queue = nullptr;  // nullptr: the default queue
};

namespace detail {

template <typename F, typename R>
class spawned_fiber final : public fiber_base {
  public:
    spawned_fiber(F&& fn, promise<R>&& p) : fn_(std::move(fn)), promise_(std::move(p)) {}

    // The callable and its captures are destroyed here, on the fiber and
    // before the future is ready: a captured connection's close() may wait
    // for the kernel, which only a fiber can, and whoever get()s the result
    // finds the captures released.
    void run() noexcept override {
        std::exception_ptr error;
        try {
            if constexpr (std::is_void_v<R>) {
                (*fn_)();
                fn_.reset();
                promise_.set_value();
            } else {
                R result = (*fn_)();
                fn_.reset();
                promise_.set_value(std::move(result));
            }
            return;
        } catch (...) {
            error = std::current_exception();
        }
        fn_.reset();  // outside the handler: a destructor may suspend this fiber
        promise_.set_exception(std::move(error), "fiber '" + name() + "'");
    }

  private:
    std::optional<F> fn_;
    promise<R> promise_;
};

// Throws std::invalid_argument unless `queue` belongs to the calling shard.
void check_queue(task_queue* queue);

}  // namespace detail

// Starts fn in a new fiber on the current shard; the future gives its result
// or rethrows its exception. An exception nobody get()s is logged with the
// fiber's name when the future is dropped.
template <typename F>
auto spawn(spawn_options options, F&& fn) -> future<std::invoke_result_t<std::decay_t<F>&>> {
    using R = std::invoke_result_t<std::decay_t<F>&>;
    using body = detail::spawned_fiber<std::decay_t<F>, R>;
    if (options.queue) detail::check_queue(options.queue);
    promise<R> p;
    auto f = p.get_future();
    detail::create_fiber<body>(options.name, options.stack_size, options.queue,
                               std::decay_t<F>(std::forward<F>(fn)), std::move(p));
    return f;
}

template <typename F>
auto spawn(F&& fn) {
    return spawn(spawn_options{}, std::forward<F>(fn));
}

// Starts fn in a new fiber in task queue `queue` (scheduling.hpp), which must
// belong to the calling shard.
template <typename F>
auto spawn_into(task_queue& queue, spawn_options options, F&& fn) {
    options.queue = &queue;
    return spawn(options, std::forward<F>(fn));
}

template <typename F>
auto spawn_into(task_queue& queue, F&& fn) {
    return spawn_into(queue, spawn_options{}, std::forward<F>(fn));
}

// Lets every other runnable fiber of the caller's task queue run once before
// continuing (other queues get the CPU when the quota is spent or the queue
// runs dry, by their shares).
void yield();

// True when the running fiber has used its task quota (--task-quota-us) and
// should yield; long loops call maybe_yield().
bool need_preempt() noexcept;

// Yields if need_preempt(): call it in long computations.
void maybe_yield();

}  // namespace percore

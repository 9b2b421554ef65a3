// promise<T> / future<T>: a value produced later, by another fiber or another
// shard. future::get() suspends the calling fiber (never the thread) until the
// value or exception arrives. Both ends belong to one shard; cross-shard
// results are delivered on the waiting shard by submit_to.
#pragma once

#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "percore/clock.hpp"
#include "percore/detail/block_cache.hpp"
#include "percore/detail/fiber_base.hpp"
#include "percore/errors.hpp"

namespace percore {

template <typename T>
class future;
template <typename T>
class promise;

namespace detail {

// Logs an exception that no one will ever get(): never lost silently.
void report_unobserved_exception(const std::exception_ptr& error,
                                 const std::string& origin) noexcept;

struct unit {};

// Shared by one promise and one future; freed when both are gone.
template <typename T>
class future_state {
  public:
    using stored_type = std::conditional_t<std::is_void_v<T>, unit, T>;

    // One state per spawn and per cross-shard call: from the shard's cache.
    static void* operator new(std::size_t size) { return local_block_cache.allocate(size); }
    static void operator delete(void* p, std::size_t size) noexcept {
        local_block_cache.free(p, size);
    }

    bool ready() const noexcept { return value_.has_value() || error_ != nullptr; }

    template <typename... A>
    void set_value(A&&... a) {
        value_.emplace(std::forward<A>(a)...);
        wake();
    }
    void set_exception(std::exception_ptr e) noexcept {
        error_ = std::move(e);
        wake();
    }

    void wait() {
        while (!ready()) {
            waiter_ = current_fiber();
            struct unregister {
                future_state* s;
                ~unregister() { s->waiter_ = nullptr; }
            } guard{this};
            suspend();
        }
    }

    bool wait_until(time_point deadline) {
        while (!ready()) {
            waiter_ = current_fiber();
            struct unregister {
                future_state* s;
                ~unregister() { s->waiter_ = nullptr; }
            } guard{this};
            if (!suspend_until(deadline)) return ready();
        }
        return true;
    }

    T take() {
        observed_ = true;
        if (error_) std::rethrow_exception(error_);
        if constexpr (!std::is_void_v<T>) return std::move(*value_);
    }

    // Drops `owners` of the two shares (promise, future); both when no future
    // was ever taken.
    void release(std::uint8_t owners = 1) noexcept {
        owners_ -= owners;
        if (owners_ == 0) {
            if (error_ && !observed_) report_unobserved_exception(error_, origin_);
            delete this;
        }
    }

    bool has_future() const noexcept { return future_attached_; }
    void detach_future() noexcept { future_attached_ = false; }
    void set_origin(std::string origin) { origin_ = std::move(origin); }

  private:
    void wake() noexcept {
        if (waiter_) make_ready(waiter_);
    }

    std::optional<stored_type> value_;
    std::exception_ptr error_;
    fiber_base* waiter_ = nullptr;
    std::uint8_t owners_ = 2;
    bool observed_ = false;
    bool future_attached_ = true;
    std::string origin_;
};

}  // namespace detail

// The consumer end. Move-only; get() may be called once.
template <typename T>
class future {
  public:
    future() = default;
    future(future&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
    future& operator=(future&& other) noexcept {
        if (this != &other) {
            reset();
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }
    ~future() { reset(); }

    // True until get() consumed the value.
    bool valid() const noexcept { return state_ != nullptr; }
    // True when get() would not suspend.
    bool available() const noexcept { return state_ && state_->ready(); }

    // Suspends the calling fiber until the value is there; rethrows the
    // producer's exception.
    T get() {
        check_valid();
        state_->wait();
        return consume();
    }

    // As get(), but throws timeout_error once the deadline passes (the value,
    // if it arrives later, is dropped with the state).
    T get(time_point deadline) {
        check_valid();
        if (!state_->wait_until(deadline)) throw timeout_error("future::get: deadline passed");
        return consume();
    }
    T get_for(duration timeout) { return get(clock::now() + timeout); }

    // Suspends until the value is there without consuming it.
    void wait() {
        check_valid();
        state_->wait();
    }

  private:
    friend class promise<T>;
    explicit future(detail::future_state<T>* s) : state_(s) {}

    void check_valid() const {
        if (!state_)
            throw std::logic_error("future::get on an invalid (moved-from or consumed) future");
    }
    T consume() {
        auto* s = std::exchange(state_, nullptr);
        struct releaser {
            detail::future_state<T>* s;
            ~releaser() {
                s->detach_future();
                s->release();
            }
        } guard{s};
        return s->take();
    }
    void reset() noexcept {
        if (auto* s = std::exchange(state_, nullptr)) {
            s->detach_future();
            s->release();
        }
    }

    detail::future_state<T>* state_ = nullptr;
};

// The producer end. Destroying it without a value gives the future
// broken_promise.
template <typename T>
class promise {
  public:
    promise() : state_(new detail::future_state<T>()) {}
    promise(promise&& other) noexcept
        : state_(std::exchange(other.state_, nullptr)), future_taken_(other.future_taken_) {}
    promise& operator=(promise&& other) noexcept {
        if (this != &other) {
            abandon();
            state_ = std::exchange(other.state_, nullptr);
            future_taken_ = other.future_taken_;
        }
        return *this;
    }
    ~promise() { abandon(); }

    // At most once.
    future<T> get_future() {
        if (future_taken_) throw std::logic_error("promise::get_future called twice");
        future_taken_ = true;
        return future<T>(state_);
    }

    template <typename... A>
    void set_value(A&&... a) {
        if (auto* s = std::exchange(state_, nullptr)) {
            s->set_value(std::forward<A>(a)...);
            finish(s);
        }
    }
    void set_exception(std::exception_ptr e) noexcept {
        if (auto* s = std::exchange(state_, nullptr)) {
            s->set_exception(std::move(e));
            finish(s);
        }
    }
    // Names the producer in the log line if the exception is never observed.
    void set_exception(std::exception_ptr e, std::string origin) noexcept {
        if (state_) {
            try {
                state_->set_origin(std::move(origin));
            } catch (...) {
                // The name is a courtesy; the exception itself is still delivered.
            }
        }
        set_exception(std::move(e));
    }
    // False once the consumer dropped its future: nobody will read a result.
    bool has_waiter() const noexcept { return state_ && (!future_taken_ || state_->has_future()); }

  private:
    void finish(detail::future_state<T>* s) noexcept {
        if (future_taken_) return s->release();
        s->detach_future();  // no future will ever read it, nor release its share
        s->release(2);
    }
    void abandon() noexcept {
        if (!state_) return;
        // Without a future there is nobody to tell: no broken_promise to log.
        if (!future_taken_) return finish(std::exchange(state_, nullptr));
        set_exception(std::make_exception_ptr(broken_promise()));
    }

    detail::future_state<T>* state_;
    bool future_taken_ = false;
};

// A future that already holds its value.
template <typename T, typename... A>
future<T> make_ready_future(A&&... a) {
    promise<T> p;
    auto f = p.get_future();
    p.set_value(std::forward<A>(a)...);
    return f;
}

template <typename T>
future<T> make_exception_future(std::exception_ptr e) {
    promise<T> p;
    auto f = p.get_future();
    p.set_exception(std::move(e));
    return f;
}

// Waits for every future; returns their values in order. If any failed, the
// first exception (in order) is rethrown after all have finished.
template <typename T>
auto when_all(std::vector<future<T>>& futures) {
    std::exception_ptr first_error;
    if constexpr (std::is_void_v<T>) {
        for (auto& f : futures) {
            try {
                f.get();
            } catch (...) {
                if (!first_error) first_error = std::current_exception();
            }
        }
        if (first_error) std::rethrow_exception(first_error);
    } else {
        std::vector<std::optional<T>> values;
        values.reserve(futures.size());
        for (auto& f : futures) {
            try {
                values.emplace_back(f.get());
            } catch (...) {
                values.emplace_back();
                if (!first_error) first_error = std::current_exception();
            }
        }
        if (first_error) std::rethrow_exception(first_error);
        std::vector<T> result;
        result.reserve(values.size());
        for (auto& v : values) result.push_back(std::move(*v));
        return result;
    }
}

template <typename T>
auto when_all(std::vector<future<T>>&& futures) {
    return when_all(futures);
}

// Variadic form: when_all(f1, f2, ...) returns a tuple of the non-void values
// (void futures contribute detail::unit).
template <typename... T>
requires(sizeof...(T) > 1) auto when_all(future<T>&... futures) {
    std::exception_ptr first_error;
    auto take = [&first_error]<typename U>(future<U>& f) {
        using V = std::conditional_t<std::is_void_v<U>, detail::unit, U>;
        try {
            if constexpr (std::is_void_v<U>) {
                f.get();
                return std::optional<V>(V{});
            } else {
                return std::optional<V>(f.get());
            }
        } catch (...) {
            if (!first_error) first_error = std::current_exception();
            return std::optional<V>();
        }
    };
    auto results = std::tuple{take(futures)...};
    if (first_error) std::rethrow_exception(first_error);
    return std::apply([](auto&... r) { return std::tuple{std::move(*r)...}; }, results);
}

}  // namespace percore

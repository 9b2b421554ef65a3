// sharded<T>: one instance of a service per shard, each built, used and
// destroyed on its own shard's thread so that its memory stays local and no
// instance is ever touched by two threads. This is how a percore app holds
// per-core state (caches, connection tables, stores): the instances talk to
// each other only through invoke_on / submit_to.
//
// The contract (Seastar's sharded<T> is the model):
// - start(args...) copies args to every shard and constructs T(args...) there,
//   all shards concurrently; once every instance exists it calls T::start()
//   (if T has one) on every shard. Either step failing anywhere undoes the
//   whole start (stop() where start() ran, then destruction, each on its
//   shard) and rethrows the first error. Pass std::ref for shared arguments.
// - stop() calls T::stop() (if T has one) on every shard and waits for all of
//   them; only then destroys each instance on its shard. So a stop() may still
//   reach its peers, which are all still alive. The first error thrown by a
//   stop() is rethrown after every instance is destroyed.
// - start() and stop() are called from a fiber, on one shard (the owner; any
//   shard) and never concurrently. The sharded<T> object must outlive every
//   call made through it; the usual place is the app's main fiber.
// - A sharded<T> destroyed while started is a bug: it is logged as an error,
//   then stopped as by stop() (so the destructor suspends; from a fiber only).
//   If that fails too (its shards are shutting down), the error and the
//   leaked instance count are logged: instances are never destroyed from a
//   thread other than their own.
// - Derive T from service<T> to reach the container (and so the peers) from
//   inside an instance.
#pragma once

#include <boost/core/demangle.hpp>

#include <exception>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "percore/future.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"

namespace percore {

template <typename T>
class sharded;

// Base of a sharded service: `class cache : public service<cache>`. Gives
// container() and default (empty) start()/stop() hooks a subclass overrides
// by declaring its own.
template <typename T>
class service {
  public:
    // The sharded<T> this instance belongs to, to reach the instances on
    // other shards (container().invoke_on(...)). Valid from the constructor's
    // return until destruction.
    sharded<T>& container() const {
        if (!container_)
            throw std::logic_error("service::container(): not started by a sharded<T>");
        return *container_;
    }
    // Called on every shard once all instances exist.
    void start() {}
    // Called on every shard before any instance is destroyed.
    void stop() {}

  private:
    friend class sharded<T>;
    sharded<T>* container_ = nullptr;
};

template <typename T>
class sharded {
  public:
    sharded() = default;
    // Instances point back at their container: it never moves.
    sharded(const sharded&) = delete;
    sharded& operator=(const sharded&) = delete;

    ~sharded() {
        if (instances_.empty()) return;
        logger().error("sharded<{}> destroyed without stop(); stopping it now",
                       boost::core::demangle(typeid(T).name()));
        try {
            stop();
        } catch (const std::exception& e) {
            std::size_t alive = 0;
            for (T* p : instances_) alive += p != nullptr;
            logger().error(
                "sharded<{}>: stopping in the destructor failed ({}); {} instance(s) leaked",
                boost::core::demangle(typeid(T).name()), e.what(), alive);
        } catch (...) {
            logger().error("sharded<{}>: stopping in the destructor failed (unknown exception)",
                           boost::core::demangle(typeid(T).name()));
        }
    }

    // Builds one T(args...) per shard, on that shard, then runs the start()
    // hooks. Suspends until done; throws the first failure (see the contract).
    template <typename... A>
    void start(A&&... args) {
        if (!instances_.empty()) throw std::logic_error("sharded::start: already started");
        unsigned n = shard_count();
        instances_.assign(n, nullptr);
        std::vector<future<void>> built;
        built.reserve(n);
        for (unsigned s = 0; s < n; ++s) {
            // Each shard gets its own copy of the arguments.
            built.push_back(submit_to(s, [this, s, args = std::make_tuple(args...)]() mutable {
                instances_[s] = std::apply([](auto&... a) { return new T(a...); }, args);
                if constexpr (std::is_base_of_v<service<T>, T>) {
                    static_cast<service<T>*>(instances_[s])->container_ = this;
                }
            }));
        }
        std::vector<bool> hook_ran(n, false);
        std::exception_ptr error = collect(built);
        if (!error) {
            std::vector<future<void>> hooks;
            for (unsigned s = 0; s < n; ++s) {
                hooks.push_back(submit_to(s, [this, s] {
                    if constexpr (has_start) instances_[s]->start();
                }));
            }
            std::vector<bool> ok;
            error = collect(hooks, &ok);
            hook_ran = ok;
        }
        if (error) {
            undo(hook_ran);
            std::rethrow_exception(error);
        }
    }

    // Runs every stop() hook, then destroys every instance, each on its
    // shard. A no-op if not started.
    void stop() {
        if (instances_.empty()) return;
        std::vector<bool> all(instances_.size(), true);
        std::exception_ptr error = undo(all);
        if (error) std::rethrow_exception(error);
    }

    bool started() const noexcept { return !instances_.empty(); }

    // This shard's instance.
    T& local() {
        unsigned s = this_shard_id();
        if (s >= instances_.size() || !instances_[s]) {
            throw std::logic_error("sharded::local: not started (shard " + std::to_string(s) + ")");
        }
        return *instances_[s];
    }

    // Runs fn(T&) on `shard`'s instance, in a fiber there.
    template <typename F>
    auto invoke_on(unsigned shard, F fn) -> future<std::invoke_result_t<F&, T&>> {
        if (instances_.empty()) throw std::logic_error("sharded::invoke_on: not started");
        return submit_to(shard, [this, fn = std::move(fn)]() mutable { return fn(local()); });
    }

    // Runs fn(T&) on every shard's instance and waits for all; void, or the
    // results indexed by shard. The first exception (by shard) is rethrown
    // after all finished.
    template <typename F>
    auto invoke_on_all(F fn) {
        using R = std::invoke_result_t<F&, T&>;
        std::vector<future<R>> calls;
        for (unsigned s = 0; s < instances_.size(); ++s) calls.push_back(invoke_on(s, fn));
        if (calls.empty()) throw std::logic_error("sharded::invoke_on_all: not started");
        return when_all(calls);
    }

    // Runs mapper(T&) on every shard concurrently and folds the results on
    // the calling shard, in shard order: reducer(std::move(acc), value).
    template <typename Mapper, typename Acc, typename Reducer>
    Acc map_reduce(Mapper mapper, Acc initial, Reducer reducer) {
        using R = std::invoke_result_t<Mapper&, T&>;
        std::vector<future<R>> calls;
        for (unsigned s = 0; s < instances_.size(); ++s) calls.push_back(invoke_on(s, mapper));
        if (calls.empty()) throw std::logic_error("sharded::map_reduce: not started");
        Acc acc = std::move(initial);
        for (auto& value : when_all(calls)) acc = reducer(std::move(acc), std::move(value));
        return acc;
    }

  private:
    static constexpr bool has_start = requires(T & t) { t.start(); };
    static constexpr bool has_stop = requires(T & t) { t.stop(); };

    // Waits for every future; returns the first error; `ok` gets who succeeded.
    static std::exception_ptr collect(std::vector<future<void>>& futures,
                                      std::vector<bool>* ok = nullptr) {
        std::exception_ptr first;
        for (auto& f : futures) {
            try {
                f.get();
                if (ok) ok->push_back(true);
            } catch (...) {
                if (ok) ok->push_back(false);
                if (!first) first = std::current_exception();
            }
        }
        return first;
    }

    // stop() where `stop_it`, then destroy every instance, each on its shard.
    std::exception_ptr undo(const std::vector<bool>& stop_it) {
        std::vector<future<void>> stops;
        for (unsigned s = 0; s < instances_.size(); ++s) {
            if (!instances_[s] || !stop_it[s]) continue;
            stops.push_back(submit_to(s, [this, s] {
                if constexpr (has_stop) instances_[s]->stop();
            }));
        }
        std::exception_ptr error = collect(stops);
        std::vector<future<void>> destroys;
        for (unsigned s = 0; s < instances_.size(); ++s) {
            if (!instances_[s]) continue;
            destroys.push_back(
                submit_to(s, [this, s] { delete std::exchange(instances_[s], nullptr); }));
        }
        std::exception_ptr destroy_error = collect(destroys);
        if (!destroy_error) instances_.clear();  // else the survivors stay visible (and leak)
        return error ? error : destroy_error;
    }

    // Entry s is written and read on shard s only (and by the owner around
    // start and stop, ordered by the replies).
    std::vector<T*> instances_;
};

}  // namespace percore

#include "percore/runtime.hpp"

#include <numa.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <latch>
#include <mutex>
#include <string>
#include <thread>

#include "percore/detail/wait_list.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/io.hpp"
#include "percore/log.hpp"
#include "percore/smp.hpp"

namespace percore {

namespace {

// The app-wide stop request. Waiters live on shard 0; other shards set the
// flag and wake shard 0, whose poller passes it on.
std::atomic<bool> stop_flag{false};
std::atomic<bool> running{false};
detail::wait_list* stop_waiters = nullptr;  // shard 0's

class stop_poller final : public poller {
  public:
    bool poll() override {
        if (!stop_flag.load(std::memory_order_acquire) || !stop_waiters || stop_waiters->empty()) {
            return false;
        }
        stop_waiters->wake_all();
        return true;
    }
    bool has_work() const override {
        return stop_flag.load(std::memory_order_acquire) && stop_waiters && !stop_waiters->empty();
    }
};

void pin_to_cpu(unsigned cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int r = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (r != 0) throw io_error(r, "pinning a shard thread to CPU " + std::to_string(cpu));
    if (numa_available() >= 0) numa_set_localalloc();  // memory from the CPU's own node
}

// Reads signals through the ring on shard 0: the first SIGINT/SIGTERM asks
// for a graceful stop, a second one ends the process at once.
void watch_signals(int signal_fd) {
    int seen = 0;
    for (;;) {
        signalfd_siginfo info{};
        int n = submit_io(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, signal_fd, &info, sizeof(info), 0); });
        if (n == -ECANCELED) return;
        if (n == -EAGAIN) {
            // The fd is non-blocking: a read io_uring handed to a worker
            // thread finds no signal yet. Wait until one is there.
            int p = submit_io(
                [&](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, signal_fd, POLLIN); });
            if (p == -ECANCELED) return;
            continue;
        }
        if (n != static_cast<int>(sizeof(info))) {
            logger().error("reading signals failed: {}", n < 0 ? std::strerror(-n) : "short read");
            return;
        }
        if (++seen == 1) {
            logger().info("received {}, stopping", strsignal(static_cast<int>(info.ssi_signo)));
            request_app_stop();
        } else {
            logger().warn("received {} again, exiting now",
                          strsignal(static_cast<int>(info.ssi_signo)));
            std::_Exit(1);
        }
    }
}

}  // namespace

void request_app_stop() noexcept {
    stop_flag.store(true, std::memory_order_release);
    if (!running.load()) return;
    if (auto* r = reactor::local_or_null(); r && r->shard_id() == 0) {
        if (stop_waiters) stop_waiters->wake_all();
        return;
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    reactor::of_shard(0).wake();
}

bool app_stop_requested() noexcept {
    return stop_flag.load(std::memory_order_acquire);
}

void wait_for_stop() {
    if (this_shard_id() != 0 || !stop_waiters) {
        throw std::logic_error("wait_for_stop() must be called from a fiber on shard 0");
    }
    while (!app_stop_requested()) stop_waiters->wait();
}

int run_shards(const runtime_config& config, std::function<int()> main) {
    if (config.smp == 0) throw config_error("--smp must be at least 1");
    if (!config.cpus.empty() && config.cpus.size() != config.smp) {
        throw std::logic_error("run_shards: one CPU per shard expected");
    }
    stop_flag = false;

    sigset_t signals;
    sigemptyset(&signals);
    int signal_fd = -1;
    sigset_t old_mask;
    if (config.handle_signals) {
        // Block before the shard threads start so every thread inherits it
        // and the signals queue on the signalfd read by shard 0.
        sigaddset(&signals, SIGINT);
        sigaddset(&signals, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &signals, &old_mask);
        signal_fd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
        if (signal_fd < 0) throw io_error(errno, "signalfd");
    }

    std::vector<reactor*> table(config.smp, nullptr);
    std::vector<std::exception_ptr> start_errors(config.smp);
    std::latch constructed(config.smp);
    std::latch go(1);
    std::atomic<bool> abort_start{false};

    // Each shard builds its reactor on its own thread (the ring must belong
    // to the thread that submits), then waits until shard 0 saw them all.
    auto build = [&](unsigned shard, std::optional<reactor>& r) {
        try {
            if (!config.cpus.empty()) pin_to_cpu(config.cpus[shard]);
            r.emplace(shard, config.smp, config.reactor);
            table[shard] = &*r;
        } catch (...) {
            start_errors[shard] = std::current_exception();
        }
        constructed.count_down();
    };

    // The cross-shard rings exist before any shard runs and outlive them all.
    detail::smp_mesh_create(config.smp);
    struct mesh_guard {
        ~mesh_guard() { detail::smp_mesh_destroy(); }
    } destroy_mesh_last;
    // No reactor is destroyed while another still runs: a running shard may
    // still wake() any other one.
    std::latch all_stopped(config.smp);

    std::vector<std::thread> threads;
    for (unsigned s = 1; s < config.smp; ++s) {
        threads.emplace_back([&, s] {
            std::optional<reactor> r;
            build(s, r);
            go.wait();
            if (!abort_start && r) {
                detail::smp_attach(*r);
                r->run();
                detail::smp_detach(*r);
            }
            all_stopped.arrive_and_wait();
        });
    }

    int exit_code = 0;
    std::exception_ptr main_error;
    {
        std::optional<reactor> r;
        build(0, r);
        constructed.wait();
        for (auto& e : start_errors) {
            if (e) abort_start = true;
        }
        if (!abort_start) {
            reactor::set_shard_table(table);
            running = true;
        }
        go.count_down();
        if (!abort_start) {
            detail::wait_list waiters;
            stop_waiters = &waiters;
            stop_poller stop_watch;
            r->add_poller(&stop_watch);
            detail::smp_attach(*r);
            if (signal_fd >= 0) {
                spawn({.name = "signals"}, [signal_fd] { watch_signals(signal_fd); });
            }
            spawn({.name = "main"}, [&] {
                try {
                    exit_code = main();
                } catch (...) {
                    main_error = std::current_exception();
                }
                for (unsigned s = 0; s < config.smp; ++s) reactor::of_shard(s).request_stop();
            });
            r->run();
            detail::smp_detach(*r);
            r->remove_poller(&stop_watch);
            stop_waiters = nullptr;
        }
        all_stopped.arrive_and_wait();
        for (auto& t : threads) t.join();
        running = false;
        reactor::set_shard_table({});
    }

    if (config.handle_signals) {
        ::close(signal_fd);
        pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    }
    for (auto& e : start_errors) {
        if (e) std::rethrow_exception(e);
    }
    if (main_error) std::rethrow_exception(main_error);
    return exit_code;
}

}  // namespace percore

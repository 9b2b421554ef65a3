// tcp_server (tcp_server.hpp): the accept loop with its cap and back-off,
// one fiber per connection, and the graceful stop.
#include "percore/tcp_server.hpp"

#include <cerrno>

#include "percore/detail/fiber_base.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/timer.hpp"

namespace percore {

namespace {

constexpr std::chrono::milliseconds first_backoff{10};
constexpr std::chrono::milliseconds longest_backoff{1000};
constexpr auto refusal_write_timeout = std::chrono::seconds(1);

// accept failed for want of a resource that open connections give back.
bool out_of_resources(int error) noexcept {
    return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

}  // namespace

tcp_server::tcp_server(handler serve, tcp_server_options options)
    : serve_(std::move(serve)), options_(std::move(options)) {}

tcp_server::~tcp_server() {
    if (!fibers_.is_closed() && fibers_.count() > 0) {
        logger().error("{}: tcp_server destroyed without stop(); {} fibers still run",
                       options_.name, fibers_.count());
    }
}

socket_address tcp_server::listen(const socket_address& address) {
    listener_ = percore::listen(address, options_.listen);
    gate::holder hold(fibers_);
    spawn({.name = options_.name + " accept"}, [this, h = std::move(hold)] { accept_loop(); });
    return listener_.local_address();
}

void tcp_server::accept_loop() {
    std::chrono::milliseconds backoff{0};
    for (;;) {
        connection conn;
        try {
            conn = listener_.accept();
            backoff = std::chrono::milliseconds(0);
        } catch (const io_error& e) {
            if (stopping_ || !listener_.is_open() || e.error_number() == ECANCELED) return;
            if (!out_of_resources(e.error_number())) {
                logger().warn("{}: accept failed: {}", options_.name, e.what());
                continue;
            }
            // The connections still open give descriptors back as they
            // end: wait for that rather than spin on the same error.
            ++accept_failures_;
            backoff = backoff.count() == 0 ? first_backoff : std::min(backoff * 2, longest_backoff);
            if (accept_failures_ == 1 || backoff == longest_backoff) {
                logger().warn("{}: accept failed ({}): retrying in {} ms", options_.name, e.what(),
                              backoff.count());
            }
            sleep_for(backoff);
            continue;
        } catch (const shutdown_error&) {
            return;
        }
        if (stopping_) return;
        if (live_.size() >= options_.max_connections) {
            refuse(std::move(conn));
            continue;
        }
        gate::holder hold(fibers_);
        spawn({.name = options_.name + " connection"},
              [this, c = std::move(conn), h = std::move(hold)]() mutable {
                  run_connection(std::move(c));
              });
    }
}

void tcp_server::refuse(connection conn) {
    ++refused_;
    if (refused_ == 1 || refused_ % 1000 == 0) {
        logger().warn("{}: {} connections refused past {} open on shard {}", options_.name,
                      refused_, options_.max_connections, this_shard_id());
    }
    if (options_.refusal.empty()) return;  // conn closes here
    // Best effort and without a fiber per refusal: the reply fits the
    // socket's send buffer of a fresh connection, so send() takes it now.
    try {
        conn.write_all(options_.refusal, clock::now() + refusal_write_timeout);
        conn.shutdown(SHUT_WR);
    } catch (const std::exception& e) {
        logger().debug("{}: refusing a connection: {}", options_.name, e.what());
    }
}

void tcp_server::run_connection(connection conn) {
    live_.emplace(&conn, detail::current_fiber());
    try {
        serve_(conn);
    } catch (const shutdown_error&) {
        // The shard stops.
    } catch (const std::exception& e) {
        // A reset peer, a stop, a bad request: this connection is over, the server is not.
        logger().debug("{}: connection ended: {}", options_.name, e.what());
    }
    live_.erase(&conn);
    conn.close();
    if (stopping_ && live_.empty()) drained_.notify_all();
}

void tcp_server::stop() {
    stopping_ = true;
    if (listener_.is_open()) listener_.close();
    // Handlers blocked in a read see EOF; their writes still go out.
    for (const auto& [c, fiber] : live_) {
        try {
            if (c->is_open()) c->shutdown(SHUT_RD);
        } catch (const io_error& e) {
            logger().debug("{}: shutdown at stop: {}", options_.name, e.what());
        }
    }
    {
        std::unique_lock<mutex> lock(drained_lock_);
        drained_.wait_until(lock, clock::now() + options_.stop_timeout,
                            [this] { return live_.empty(); });
    }
    // Past the deadline: cut the rest off (their reads and writes fail) and
    // interrupt what they wait in (a timer, a lock...).
    for (const auto& [c, fiber] : live_) {
        try {
            if (c->is_open()) c->shutdown(SHUT_RDWR);
        } catch (const io_error& e) {
            logger().debug("{}: shutdown at stop: {}", options_.name, e.what());
        }
        detail::interrupt(fiber);
    }
    fibers_.close();
}

}  // namespace percore

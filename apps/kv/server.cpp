#include "server.hpp"

#include <cerrno>
#include <vector>

#include "memcache/memcache_protocol.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/stream.hpp"
#include "percore/timer.hpp"

namespace percore::kv {

namespace {

// Replies gathered before a write even when more requests are buffered.
constexpr std::size_t write_threshold = 256 * 1024;
constexpr std::size_t read_buffer_size = 16 * 1024;

// What a connection was waiting for when --idle-timeout ran out.
enum class idle_wait : std::uint8_t { request, rest_of_request, replies };

// Lingering close of refused connections (refuse_connection()).
constexpr auto refuse_write_timeout = std::chrono::seconds(1);
constexpr auto linger_time = std::chrono::seconds(2);
constexpr std::size_t linger_max_bytes = 1 << 20;
constexpr unsigned max_lingering = 256;  // per shard
thread_local unsigned lingering = 0;     // this shard's lingering connections

const char* describe(idle_wait w) noexcept {
    switch (w) {
        case idle_wait::request:
            return "idle for";
        case idle_wait::rest_of_request:
            return "sent an incomplete request for";
        case idle_wait::replies:
            return "did not read its replies for";
    }
    return "?";
}

class memcache_session final : public protocol_session {
  public:
    memcache_session(db& database, const memcache::parser_limits& limits)
        : session_(database, limits) {}
    process_result process(std::string_view input, std::string& out) override {
        return session_.process(input, out);
    }
    std::size_t max_request_size() const override { return session_.max_request_size(); }
    std::string_view too_many_connections_reply() const override {
        return memcache::replies::too_many_connections;
    }

  private:
    memcache::session session_;
};

}  // namespace

session_factory memcache_sessions(std::size_t max_item_size) {
    return [max_item_size](db& database) -> std::unique_ptr<protocol_session> {
        memcache::parser_limits limits;
        limits.max_item_size = max_item_size;
        return std::make_unique<memcache_session>(database, limits);
    };
}

tcp_server::tcp_server(db& database, session_factory factory, std::string name)
    : db_(database), factory_(std::move(factory)), name_(std::move(name)) {}

std::uint16_t tcp_server::listen(const socket_address& address) {
    listener_ = percore::listen(address);
    gate::holder hold(gate_);
    spawn({.name = "kv accept"}, [this, hold = std::move(hold)] { accept_loop(); });
    return listener_.local_address().port();
}

void tcp_server::stop() {
    if (listener_.is_open()) listener_.close();
    // shutdown() does not suspend, so the set cannot change under us; each
    // connection's fiber then sees EOF or an error and ends.
    for (connection* c : open_) {
        try {
            if (c->is_open()) c->shutdown(SHUT_RDWR);
        } catch (const io_error& e) {
            logger().debug("kv {}: shutdown at stop: {}", name_, e.what());
        }
    }
    gate_.close();
}

void tcp_server::accept_loop() {
    for (;;) {
        connection conn;
        try {
            conn = listener_.accept();
        } catch (const io_error& e) {
            if (e.error_number() == ECANCELED || !listener_.is_open() || gate_.is_closed()) return;
            // Out of descriptors and the like: report, let connections end, retry.
            logger().warn("kv {}: accept failed: {}", name_, e.what());
            sleep_for(std::chrono::milliseconds(10));
            continue;
        } catch (const shutdown_error&) {
            return;
        }
        if (gate_.is_closed()) return;
        gate::holder hold(gate_);
        spawn({.name = "kv connection"},
              [this, c = std::move(conn), hold = std::move(hold)]() mutable { serve(c); });
    }
}

void tcp_server::serve(connection& conn) {
    db_shard& shard = db_.local();
    auto session = factory_(db_);
    if (!shard.admit_connection()) {
        open_.insert(&conn);  // stop() cuts the linger short
        refuse_connection(conn, session->too_many_connections_reply(), name_);
        open_.erase(&conn);
        return;
    }
    open_.insert(&conn);
    struct release {
        tcp_server* server;
        db_shard& shard;
        connection& conn;
        ~release() {
            server->open_.erase(&conn);
            shard.release_connection();
        }
    } guard{this, shard, conn};
    const std::chrono::seconds idle = shard.config().idle_timeout;
    // When the incomplete request at the front of the input began (slowloris).
    std::optional<time_point> partial_since;
    bool in_request = false;                 // the session holds an unfinished request
    idle_wait waiting = idle_wait::request;  // what a timeout means
    try {
        input_stream in(conn, read_buffer_size, session->max_request_size() + read_buffer_size);
        std::string out;
        out.reserve(read_buffer_size);
        for (;;) {
            const auto r = session->process(in.buffered(), out);
            in.consume(r.consumed);
            if (r.consumed > 0) {
                // Progress ends the wait for the request at the front, unless
                // what was consumed is part of an unfinished one (a swallowed
                // value body): that one's clock started at its first byte
                // (or earlier, if a request before it in this input was
                // also partial: stricter, never laxer).
                if (!r.in_request) {
                    partial_since.reset();
                } else if (!partial_since) {
                    partial_since = clock::now();
                }
            }
            in_request = r.in_request;
            waiting = idle_wait::replies;
            if (r.close) {
                if (!out.empty()) write_with_timeout(conn, out, idle);
                break;
            }
            if (r.more && out.size() < write_threshold) continue;
            if (!out.empty()) {
                write_with_timeout(conn, out, idle);
                out.clear();
                if (out.capacity() > 4 * write_threshold) {
                    out.shrink_to_fit();
                    out.reserve(read_buffer_size);
                }
            }
            if (r.more) continue;
            if ((in_request || !in.buffered().empty()) && !partial_since)
                partial_since = clock::now();
            waiting = partial_since ? idle_wait::rest_of_request : idle_wait::request;
            in.set_deadline(idle_deadline(idle, partial_since));
            if (!in.fill()) break;  // the peer closed
        }
    } catch (const shutdown_error&) {
        // The shard is stopping: just close.
    } catch (const timeout_error& e) {
        // --idle-timeout: silent, stuck in one request, or not reading replies.
        std::string peer = "?";
        try {
            peer = conn.peer_address().to_string();
        } catch (const io_error&) {
            // Already reset: the address is gone, the log line stays useful.
        }
        client_log::idle_timeouts().info(
            "kv {}: closing connection from {}: {} {} s (--idle-timeout): {}", name_, peer,
            describe(waiting), idle.count(), e.what());
        if (waiting == idle_wait::rest_of_request) {  // say why the request was dropped
            try {
                write_with_timeout(conn, "SERVER_ERROR request incomplete at --idle-timeout\r\n",
                                   std::chrono::seconds(1));
            } catch (const std::exception& w) {
                logger().debug("kv {}: timeout reply not sent: {}", name_, w.what());
            }
        }
    } catch (const io_error& e) {
        // Resets, broken pipes, cancellation at stop: normal ends of a connection.
        logger().debug("kv {}: connection ended: {}", name_, e.what());
    } catch (const std::exception& e) {
        client_log::closed_connections().warn("kv {}: connection closed after an error: {}", name_,
                                              e.what());
    }
    conn.close();
}

std::optional<time_point> idle_deadline(std::chrono::seconds timeout,
                                        std::optional<time_point> partial_since) {
    if (timeout.count() == 0) return std::nullopt;
    return partial_since.value_or(clock::now()) + timeout;
}

void write_with_timeout(connection& conn, std::string_view data, std::chrono::seconds timeout) {
    if (timeout.count() == 0) return conn.write_all(data);
    // Slices small enough that a reading client always finishes one in time.
    constexpr std::size_t slice = 4 * 1024 * 1024;
    while (!data.empty()) {
        const std::string_view piece = data.substr(0, slice);
        conn.write_all(piece, clock::now() + timeout);
        data.remove_prefix(piece.size());
    }
}

void refuse_connection(connection& conn, std::string_view reply, std::string_view who) {
    try {
        conn.write_all(reply, clock::now() + refuse_write_timeout);
        if (lingering >= max_lingering) {
            logger().debug("kv {}: {} refused connections linger already: closing at once", who,
                           lingering);
        } else {
            ++lingering;
            struct done {
                ~done() { --lingering; }
            } count;
            conn.shutdown(SHUT_WR);
            const time_point deadline = clock::now() + linger_time;
            char discard[4096];  // the input is dropped unread: no buffer grows
            std::size_t drained = 0;
            while (drained < linger_max_bytes) {
                const std::size_t n = conn.read(std::span(discard), deadline);
                if (n == 0) break;  // the client closed: no reset
                drained += n;
            }
        }
    } catch (const timeout_error& e) {
        // Not reading the line, or still sending at the linger deadline.
        logger().debug("kv {}: refused client too slow: {}", who, e.what());
    } catch (const io_error& e) {
        logger().debug("kv {}: refusing a connection: {}", who, e.what());
    } catch (const shutdown_error&) {
        // The shard is stopping: just close.
    }
    conn.close();
}

std::uint16_t listen_all(sharded<tcp_server>& servers, const socket_address& address) {
    const std::uint16_t port =
        servers.invoke_on(0, [address](tcp_server& s) { return s.listen(address); }).get();
    socket_address bound = address;
    if (!address.is_unix()) {
        std::string host = address.to_string();
        host = host.substr(0, host.rfind(':'));
        if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
        bound = socket_address::inet(host, port);
    }
    std::vector<future<std::uint16_t>> rest;
    for (unsigned s = 1; s < shard_count(); ++s)
        rest.push_back(
            servers.invoke_on(s, [bound](tcp_server& srv) { return srv.listen(bound); }));
    when_all(rest);
    return port;
}

}  // namespace percore::kv

// The Redis front end's listeners: accepting, admitting (--max-connections)
// and running one resp_session per connection; start and stop on every shard.
#include "resp/resp_server.hpp"

#include <algorithm>
#include <exception>

#include "client_log.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "percore/timer.hpp"
#include "resp/resp_session.hpp"
#include "server.hpp"

namespace percore::kv {

resp_shared::resp_shared(resp_config c, db& d)
    : config(std::move(c)),
      database(&d),
      stores(shard_count(), nullptr),
      frontends(shard_count(), nullptr) {
    settings.proto_max_bulk_len = config.proto_max_bulk_len;
    settings.max_output_buffer = d.local().config().max_output_buffer;
}

resp_frontend::resp_frontend(resp_shared& shared) : shared_(shared) {}

resp_frontend::~resp_frontend() = default;

void resp_frontend::start(std::uint16_t port) {
    const std::uint16_t wanted = port != 0 ? port : shared_.config.port;
    listener_ = listen(socket_address::inet(shared_.config.host, wanted));
    port_ = listener_.local_address().port();
    shared_.frontends[this_shard_id()] = this;
    acceptor_ = spawn({.name = "resp-accept"}, [this] { accept_loop(); });
}

void resp_frontend::accept_loop() {
    for (;;) {
        percore::connection conn;
        try {
            conn = listener_.accept();
        } catch (const io_error& e) {
            if (!listener_.is_open()) return;  // stop() closed it
            // Out of descriptors and the like: report, let connections end, retry.
            logger().warn("resp: accept on port {} failed: {}", port_, e.what());
            sleep_for(std::chrono::milliseconds(10));
            continue;
        } catch (const shutdown_error&) {
            return;
        }
        ++stats_.connections_received;
        // --max-connections counts both protocols' connections.
        if (!shared_.database->local().admit_connection()) {
            ++stats_.rejected_connections;
            // In its own fiber: the refusal lingers (reads the client's input
            // until it closes, bounded) so that it reads the line, not a reset.
            gate::holder hold(gate_);
            spawn({.name = "resp-refuse"},
                  [this, c = std::move(conn), h = std::move(hold)]() mutable {
                      live_.push_back(&c);  // stop() cuts the linger short
                      refuse_connection(c, "-ERR max number of clients reached\r\n", "resp");
                      live_.erase(std::find(live_.begin(), live_.end(), &c));
                  });
            continue;
        }
        gate::holder hold(gate_);
        spawn({.name = "resp-conn"}, [this, c = std::move(conn), h = std::move(hold)]() mutable {
            serve(std::move(c), nullptr);
        });
    }
}

void resp_frontend::serve(percore::connection conn, std::unique_ptr<resp_session> session) {
    live_.push_back(&conn);
    std::optional<unsigned> move;
    try {
        if (session) {
            session->rebind(*this, conn);
        } else {
            session = std::make_unique<resp_session>(*this, conn);
        }
        move = session->run();
    } catch (const io_error& e) {
        // A peer that reset or went away, or stop() closing the socket.
        logger().debug("resp: connection ended: {}", e.what());
    } catch (const shutdown_error&) {
        // The shard is stopping.
    } catch (const timeout_error&) {
        // --idle-timeout: the session logged which wait ran out.
    } catch (const std::exception& e) {
        client_log::closed_connections().error("resp: connection failed: {}", e.what());
    }
    live_.erase(std::find(live_.begin(), live_.end(), &conn));
    if (move && !gate_.is_closed()) {
        move_to(*move, conn, std::move(session));
    } else {
        shared_.database->local().release_connection();
    }
}

void resp_frontend::move_to(unsigned to, percore::connection& conn,
                            std::unique_ptr<resp_session> session) {
    db_shard& here = shared_.database->local();
    here.connection_moved_out();
    ++stats_.clients_moved;
    // Released here, adopted there; if the call never runs (the target
    // stops first), the connection it carries closes the socket.
    percore::connection moving(conn.release());
    try {
        submit_to(to, [c = std::move(moving), session = std::move(session), shared = &shared_,
                       to]() mutable {
            shared->database->local().connection_moved_in();
            if (resp_frontend* fe = shared->frontends[to]) {
                fe->adopt(std::move(c), std::move(session));
            } else {
                shared->database->local().release_connection();  // stopped meanwhile
            }
        }).get();
    } catch (const std::exception& e) {
        logger().debug("resp: moving a client to shard {}: {}", to, e.what());
        here.connection_moved_in();
        here.release_connection();
    }
}

void resp_frontend::adopt(percore::connection conn, std::unique_ptr<resp_session> session) {
    try {
        gate::holder hold(gate_);
        spawn({.name = "resp-conn"},
              [this, c = std::move(conn), s = std::move(session), h = std::move(hold)]() mutable {
                  serve(std::move(c), std::move(s));
              });
    } catch (const gate_closed_error&) {
        shared_.database->local().release_connection();  // stopping: conn closes here
    }
}

void resp_frontend::stop() {
    listener_.close();
    if (acceptor_.valid()) {
        try {
            acceptor_.get();
        } catch (const std::exception& e) {
            logger().warn("resp: acceptor ended with: {}", e.what());
        }
    }
    // shutdown() does not suspend: each connection's fiber then sees EOF or
    // an error and ends (close() would wait on each in turn).
    for (auto* c : live_) {
        try {
            if (c->is_open()) c->shutdown(SHUT_RDWR);
        } catch (const io_error& e) {
            logger().debug("resp: shutdown at stop: {}", e.what());
        }
    }
    gate_.close();
    shared_.frontends[this_shard_id()] = nullptr;
}

std::vector<std::unique_ptr<resp_frontend>> start_resp_frontends(resp_shared& shared) {
    std::vector<std::unique_ptr<resp_frontend>> frontends(shard_count());
    std::uint16_t port = 0;
    try {
        for (unsigned s = 0; s < shard_count(); ++s) {
            port = submit_to(s, [&shared, &frontends, s, port] {
                       shared.stores[s] = &shared.database->local().store();
                       auto fe = std::make_unique<resp_frontend>(shared);
                       fe->start(port);
                       frontends[s] = std::move(fe);
                       return frontends[s]->port();
                   }).get();
        }
    } catch (...) {
        // Each front end must be stopped and destroyed on its own shard.
        stop_resp_frontends(frontends);
        throw;
    }
    return frontends;
}

void stop_resp_frontends(std::vector<std::unique_ptr<resp_frontend>>& frontends) {
    for (unsigned s = 0; s < frontends.size(); ++s) {
        if (!frontends[s]) continue;
        submit_to(s, [&frontends, s] {
            frontends[s]->stop();
            frontends[s].reset();
        }).get();
    }
}

}  // namespace percore::kv

// echo: a TCP echo server on every shard. Each shard listens on the same
// port (SO_REUSEPORT) and serves its connections in one fiber each. The
// smallest real server: the yardstick against plain epoll and liburing loops.
#include <memory>
#include <string>
#include <unordered_set>

#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/net.hpp"
#include "percore/smp.hpp"
#include "percore/sync.hpp"

namespace po = boost::program_options;
using namespace percore;

namespace {

constexpr std::size_t buffer_size = 16 * 1024;

// One shard's server: its listener, its connections (to shut them down) and
// a gate that stop() waits on until every connection fiber is gone.
struct shard_server {
    listener socket;
    gate fibers;
    std::unordered_set<connection*> connections;
};

thread_local std::unique_ptr<shard_server> server;

void serve(connection conn) {
    server->connections.insert(&conn);
    struct unregister {
        connection* c;
        ~unregister() { server->connections.erase(c); }
    } guard{&conn};
    std::unique_ptr<char[]> buffer(new char[buffer_size]);
    for (;;) {
        std::size_t n = conn.read(std::span<char>(buffer.get(), buffer_size));
        if (n == 0) return;
        conn.write_all(std::string_view(buffer.get(), n));
    }
}

void accept_loop() {
    for (;;) {
        connection conn;
        try {
            conn = server->socket.accept();
        } catch (const io_error& e) {
            if (!server->socket.is_open()) return;  // stop() closed it
            logger().warn("accept failed: {}", e.what());
            continue;
        }
        gate::holder hold(server->fibers);
        spawn({.name = "echo connection"}, [c = std::move(conn), h = std::move(hold)]() mutable {
            try {
                serve(std::move(c));
            } catch (const std::exception& e) {
                // A reset peer or a stop: this connection is over, the server is not.
                logger().debug("connection ended: {}", e.what());
            }
        });
    }
}

void start(const socket_address& address) {
    server = std::make_unique<shard_server>();
    server->socket = listen(address);
    gate::holder hold(server->fibers);
    spawn({.name = "echo accept"}, [h = std::move(hold)] { accept_loop(); });
    logger().info("listening on {}", server->socket.local_address().to_string());
}

void stop() {
    if (!server) return;
    server->socket.close();
    for (connection* c : server->connections) {
        try {
            c->shutdown(SHUT_RDWR);  // its fiber sees EOF (or EPIPE) and ends
        } catch (const io_error& e) {
            logger().debug("shutting a connection down: {}", e.what());
        }
    }
    server->fibers.close();
    server.reset();
}

net_tuning::recv_policy parse_recv_policy(const std::string& text) {
    if (text == "readiness") return net_tuning::recv_policy::readiness;
    if (text == "ring") return net_tuning::recv_policy::ring;
    if (text == "after-full") return net_tuning::recv_policy::after_full;
    if (text == "always") return net_tuning::recv_policy::always;
    throw config_error("bad --net-recv '" + text +
                       "': expected readiness, ring, after-full or always");
}

}  // namespace

int main(int argc, char** argv) {
    app echo("echo", "TCP echo server on every shard");
    echo.add_options()("address", po::value<std::string>()->default_value("127.0.0.1"),
                       "IP address to listen on")("port",
                                                  po::value<std::uint16_t>()->default_value(7000),
                                                  "TCP port (every shard listens on it)")(
        "net-recv", po::value<std::string>()->default_value("readiness"),
        "recv policy: readiness (a multishot poll stays armed; recv when it fires), ring, "
        "after-full (ring, but try recv first when the last read filled the buffer) or always")(
        "net-send-first", po::value<bool>()->default_value(true), "try send() before the ring")(
        "net-poll-first", po::value<bool>()->default_value(true),
        "arm the poll at once for recvs expected to wait");
    return echo.run(argc, argv, [&] {
        const auto& opts = echo.options();
        std::string host = opts["address"].as<std::string>();
        auto port = opts["port"].as<std::uint16_t>();
        net_tuning& tuning = default_net_tuning();
        tuning.recv = parse_recv_policy(opts["net-recv"].as<std::string>());
        tuning.send_first = opts["net-send-first"].as<bool>();
        tuning.poll_first = opts["net-poll-first"].as<bool>();
        socket_address address = socket_address::inet(host, port);
        try {
            invoke_on_all([address] { start(address); });
        } catch (const io_error& e) {
            throw config_error(e.what());  // e.g. the port is taken: one clear line, exit 2
        }
        wait_for_stop();
        invoke_on_all([] { stop(); });
        return 0;
    });
}

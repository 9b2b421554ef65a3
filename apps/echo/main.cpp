// echo: a TCP echo server on every shard. Each shard listens on the same
// port (SO_REUSEPORT) and serves its connections in one fiber each. The
// smallest real server: the yardstick against plain epoll and liburing loops.
#include <algorithm>
#include <memory>
#include <string>

#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/net.hpp"
#include "percore/smp.hpp"
#include "percore/tcp_server.hpp"

namespace po = boost::program_options;
using namespace percore;

namespace {

constexpr std::size_t buffer_size = 16 * 1024;

// Each shard's server (the framework's tcp_server: cap, back-off, stop).
thread_local std::unique_ptr<tcp_server> server;

void serve(connection& conn) {
    std::unique_ptr<char[]> buffer(new char[buffer_size]);
    for (;;) {
        std::size_t n = conn.read(std::span<char>(buffer.get(), buffer_size));
        if (n == 0) return;
        conn.write_all(std::string_view(buffer.get(), n));
    }
}

void start(const socket_address& address, std::size_t max_connections) {
    tcp_server_options options;
    options.name = "echo";
    // --max-connections over the process: each shard takes its share.
    options.max_connections = std::max<std::size_t>(1, max_connections / shard_count());
    server = std::make_unique<tcp_server>(&serve, options);
    logger().info("listening on {}", server->listen(address).to_string());
}

void stop() {
    if (!server) return;
    server->stop();
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
        "max-connections", po::value<std::size_t>()->default_value(10000),
        "open connections over all shards (each shard takes an equal share); past it new ones "
        "are closed")(
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
        const auto max_connections = opts["max-connections"].as<std::size_t>();
        if (max_connections == 0) throw config_error("--max-connections must be at least 1");
        try {
            invoke_on_all([address, max_connections] { start(address, max_connections); });
        } catch (const io_error& e) {
            throw config_error(e.what());  // e.g. the port is taken: one clear line, exit 2
        }
        wait_for_stop();
        invoke_on_all([] { stop(); });
        return 0;
    });
}

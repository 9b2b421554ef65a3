// skeleton: the smallest complete sharded percore service; copy it to start
// your own (`scripts/new-app NAME` copies and renames it).
//
// percore runs one shard per CPU: a thread with its own io_uring event loop,
// memory and fibers. Fiber code reads like blocking code (`read` suspends the
// fiber, never the thread). Shards share nothing: they run functions on each
// other (submit_to, invoke_on) and get the results back as futures.
//
// The service: named counters, each owned by one shard (hash of the name),
// over TCP, one line per request and per reply:
//   INCR name  -> the counter's new value (incremented on its owner shard)
//   TOTAL      -> the sum of all counters on all shards
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/net.hpp"
#include "percore/sharded.hpp"
#include "percore/stream.hpp"
#include "percore/tcp_server.hpp"

namespace po = boost::program_options;
using namespace percore;

namespace {

constexpr std::size_t max_line = 4096;  // longer requests end the connection

// One instance lives on every shard (sharded<skeleton_service> builds them).
// Deriving from service<> gives container(): the way to reach the peers.
class skeleton_service : public service<skeleton_service> {
  public:
    skeleton_service(socket_address address, std::size_t max_connections)
        : address_(std::move(address)),
          // The framework's TCP server runs serve() in a fiber per connection,
          // caps the open connections (this shard's share of the total) and
          // backs off when descriptors run out.
          server_([this](connection& conn) { serve(conn); },
                  {.name = "skeleton",
                   .max_connections = std::max<std::size_t>(1, max_connections / shard_count()),
                   .refusal = "ERROR too many connections\n"}) {}

    // Called on every shard once all instances exist: every shard listens on
    // the same port (SO_REUSEPORT) and the kernel spreads the connections.
    void start() { bound_ = server_.listen(address_); }

    // Called on every shard before any instance is destroyed: stop accepting,
    // let the open connections finish (their reads see EOF), wait for them.
    void stop() { server_.stop(); }

    socket_address address() const { return bound_; }

    // This shard's part of the state. Only ever touched on this shard, so no locks.
    std::uint64_t incr(const std::string& name) { return ++counters_[name]; }
    std::uint64_t local_total() const {
        std::uint64_t sum = 0;
        for (const auto& [name, value] : counters_) sum += value;
        return sum;
    }

  private:
    // One fiber per connection: read a line, answer it, repeat until EOF.
    // An exception (a reset peer, too long a line...) ends this connection only.
    void serve(connection& conn) {
        input_stream in(conn);
        output_stream out(conn);
        for (;;) {
            std::string_view line = in.read_until("\n", max_line);
            if (line.empty()) break;  // EOF
            out.write(handle(line) + "\n");
            if (in.buffered().empty()) out.flush();  // pipelined requests: one send
        }
    }

    // Answers one request line (with or without its "\r\n").
    std::string handle(std::string_view line) {
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
        if (line.starts_with("INCR ") && line.size() > 5) {
            std::string name(line.substr(5));
            unsigned owner = std::hash<std::string>{}(name) % shard_count();
            // Run incr on the owner shard's instance (invoke_on is submit_to
            // with the instance passed in); get() suspends this fiber only.
            auto incr = [name](skeleton_service& s) { return s.incr(name); };
            return std::to_string(container().invoke_on(owner, incr).get());
        }
        if (line == "TOTAL") {
            // Ask every shard for its sum, add the answers up here.
            auto sum = [](skeleton_service& s) { return s.local_total(); };
            return std::to_string(container().map_reduce(sum, std::uint64_t{0}, std::plus<>()));
        }
        return "ERROR unknown command";
    }

    socket_address address_;
    socket_address bound_;
    tcp_server server_;
    std::unordered_map<std::string, std::uint64_t> counters_;
};

}  // namespace

int main(int argc, char** argv) {
    // percore::app parses the options (ours and --smp, --cpuset, ...), starts
    // the shards and runs the lambda in a fiber on shard 0.
    app shell("skeleton", "a sharded counter service (INCR name, TOTAL) over TCP");
    // clang-format off
    shell.add_options()
        ("address", po::value<std::string>()->default_value("127.0.0.1"), "IP address to listen on")
        ("port", po::value<std::uint16_t>()->default_value(7100), "TCP port (every shard listens on it)")
        ("max-connections", po::value<std::size_t>()->default_value(10000),
         "open connections over all shards (each takes an equal share)");
    // clang-format on
    return shell.run(argc, argv, [&] {
        auto port = shell.options()["port"].as<std::uint16_t>();
        if (port == 0) throw config_error("--port 0: every shard must listen on one known port");
        auto address = socket_address::inet(shell.options()["address"].as<std::string>(), port);
        const auto max_connections = shell.options()["max-connections"].as<std::size_t>();
        if (max_connections == 0) throw config_error("--max-connections must be at least 1");

        sharded<skeleton_service> service;
        try {
            // One skeleton_service per shard, then their start().
            service.start(address, max_connections);
        } catch (const io_error& e) {
            throw config_error(e.what());  // e.g. the port is taken: one clear line, exit 2
        }
        logger().info("listening on {}", service.local().address().to_string());
        wait_for_stop();  // until SIGINT or SIGTERM
        service.stop();   // every stop(), then every instance destroyed
        return 0;
    });
}

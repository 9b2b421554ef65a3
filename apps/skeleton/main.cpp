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
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/net.hpp"
#include "percore/sharded.hpp"
#include "percore/stream.hpp"
#include "percore/sync.hpp"

namespace po = boost::program_options;
using namespace percore;

namespace {

constexpr std::size_t max_line = 4096;  // longer requests end the connection

// One instance lives on every shard (sharded<skeleton_service> builds them).
// Deriving from service<> gives container(): the way to reach the peers.
class skeleton_service : public service<skeleton_service> {
  public:
    explicit skeleton_service(socket_address address) : address_(std::move(address)) {}

    // Called on every shard once all instances exist: every shard listens on
    // the same port (SO_REUSEPORT) and the kernel spreads the connections.
    void start() {
        listener_ = listen(address_);
        gate::holder hold(fibers_);
        spawn({.name = "skeleton accept"}, [this, h = std::move(hold)] { accept_loop(); });
    }

    // Called on every shard before any instance is destroyed: stop accepting,
    // end the open connections, wait until their fibers are gone.
    void stop() {
        listener_.close();
        for (connection* c : connections_) {
            try {
                c->shutdown(SHUT_RDWR);  // its fiber's read sees EOF and the fiber ends
            } catch (const io_error& e) {
                logger().debug("connection already gone: {}", e.what());
            }
        }
        fibers_.close();
    }

    socket_address address() const { return listener_.local_address(); }

    // This shard's part of the state. Only ever touched on this shard, so no locks.
    std::uint64_t incr(const std::string& name) { return ++counters_[name]; }
    std::uint64_t local_total() const {
        std::uint64_t sum = 0;
        for (const auto& [name, value] : counters_) sum += value;
        return sum;
    }

  private:
    void accept_loop() {
        while (listener_.is_open()) {
            try {
                connection conn = listener_.accept();
                gate::holder hold(fibers_);  // stop() waits for this fiber
                spawn({.name = "skeleton connection"},
                      [this, c = std::move(conn), h = std::move(hold)]() mutable { serve(c); });
            } catch (const shutdown_error&) {
                return;  // the shard is stopping
            } catch (const std::exception& e) {
                if (listener_.is_open()) logger().warn("accept failed: {}", e.what());
            }
        }
    }

    // One fiber per connection: read a line, answer it, repeat until EOF.
    void serve(connection& conn) {
        connections_.insert(&conn);
        try {
            input_stream in(conn);
            output_stream out(conn);
            for (;;) {
                std::string_view line = in.read_until("\n", max_line);
                if (line.empty()) break;  // EOF
                out.write(handle(line) + "\n");
                if (in.buffered().empty()) out.flush();  // pipelined requests: one send
            }
        } catch (const std::exception& e) {
            logger().debug("connection ended: {}", e.what());  // reset peer, too long a line...
        }
        connections_.erase(&conn);
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
    listener listener_;
    gate fibers_;  // the accept loop and the connection fibers
    std::unordered_set<connection*> connections_;
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
        ("port", po::value<std::uint16_t>()->default_value(7100), "TCP port (every shard listens on it)");
    // clang-format on
    return shell.run(argc, argv, [&] {
        auto port = shell.options()["port"].as<std::uint16_t>();
        if (port == 0) throw config_error("--port 0: every shard must listen on one known port");
        auto address = socket_address::inet(shell.options()["address"].as<std::string>(), port);

        sharded<skeleton_service> service;
        try {
            service.start(address);  // one skeleton_service per shard, then their start()
        } catch (const io_error& e) {
            throw config_error(e.what());  // e.g. the port is taken: one clear line, exit 2
        }
        logger().info("listening on {}", service.local().address().to_string());
        wait_for_stop();  // until SIGINT or SIGTERM
        service.stop();   // every stop(), then every instance destroyed
        return 0;
    });
}

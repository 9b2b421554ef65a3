// kv: a sharded in-memory key-value store speaking memcached's text protocol
// (and RESP2, wired by its own front end). Each key lives on its owner shard;
// connections are served on whichever shard accepted them and forward to the
// owners in batches.
#include <memory>
#include <string>
#include <vector>

#include "db.hpp"
#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/log.hpp"
#include "percore/sharded.hpp"
#include "resp_server.hpp"
#include "server.hpp"

namespace po = boost::program_options;
using namespace percore;

namespace {

kv::db_config read_config(const po::variables_map& opts) {
    kv::db_config config;
    config.max_memory = parse_size(opts["max-memory"].as<std::string>());
    config.evict = !opts["no-evict"].as<bool>();
    config.max_connections = opts["max-connections"].as<std::size_t>();
    config.max_item_size = parse_size(opts["max-item-size"].as<std::string>());
    if (config.max_memory < 1024 * 1024)
        throw config_error("--max-memory " + opts["max-memory"].as<std::string>() +
                           " is below the minimum of 1M");
    if (config.max_item_size < 1024 || config.max_item_size > (std::size_t{512} << 20))
        throw config_error("--max-item-size " + opts["max-item-size"].as<std::string>() +
                           " is outside 1k..512M");
    if (config.max_connections == 0) throw config_error("--max-connections must be at least 1");
    return config;
}

}  // namespace

int main(int argc, char** argv) {
    app kv_app("kv", "sharded in-memory key-value store (memcached text protocol, RESP2)");
    kv_app.add_options()("address", po::value<std::string>()->default_value("127.0.0.1"),
                         "IP address to listen on")(
        "memcache-port", po::value<std::uint16_t>()->default_value(11211),
        "memcached text protocol port (0 disables it)")(
        "redis-port", po::value<std::uint16_t>()->default_value(6379),
        "RESP2 port (0 disables it)")("requirepass", po::value<std::string>()->default_value(""),
                                      "RESP2: password clients must AUTH with (empty: none)")(
        "proto-max-bulk-len", po::value<std::string>()->default_value("512M"),
        "RESP2: largest bulk string of a request, like Redis")(
        "client-query-buffer-limit", po::value<std::string>()->default_value("1G"),
        "RESP2: most bytes one connection may buffer for a request, like Redis")(
        "max-memory", po::value<std::string>()->default_value("1G"),
        "memory for items over all shards (e.g. 512M, 2G)")(
        "no-evict", po::bool_switch(), "refuse writes when full instead of evicting LRU items")(
        "max-connections", po::value<std::size_t>()->default_value(10000),
        "open connections over all shards; beyond it new ones get an error and are closed")(
        "max-item-size", po::value<std::string>()->default_value("1M"),
        "largest memcached item (key + value + overhead), like memcached -I");
    // --metrics-port comes from the app shell (percore::app), which serves it.
    return kv_app.run(argc, argv, [&] {
        const auto& opts = kv_app.options();
        const kv::db_config config = read_config(opts);
        const std::string host = opts["address"].as<std::string>();
        const auto memcache_port = opts["memcache-port"].as<std::uint16_t>();
        const auto redis_port = opts["redis-port"].as<std::uint16_t>();

        kv::db database;
        sharded<kv::tcp_server> memcache;
        std::unique_ptr<kv::resp_shared> resp_shared;
        std::vector<std::unique_ptr<kv::resp_frontend>> resp;
        auto stop_all = [&] {
            kv::stop_resp_frontends(resp);
            memcache.stop();
            database.stop();
        };
        try {
            database.start(config);
            if (memcache_port != 0) {
                memcache.start(std::ref(database), kv::memcache_sessions(config.max_item_size),
                               std::string("memcache"));
                const auto port =
                    kv::listen_all(memcache, socket_address::inet(host, memcache_port));
                logger().info("listening on {}:{} (memcache)", host, port);
            }
            if (redis_port != 0) {
                kv::resp_config rc;
                rc.host = host;
                rc.port = redis_port;
                rc.requirepass = opts["requirepass"].as<std::string>();
                rc.proto_max_bulk_len = parse_size(opts["proto-max-bulk-len"].as<std::string>());
                rc.client_query_buffer_limit =
                    parse_size(opts["client-query-buffer-limit"].as<std::string>());
                resp_shared = std::make_unique<kv::resp_shared>(rc, database);
                resp = kv::start_resp_frontends(*resp_shared);
                logger().info("listening on {}:{} (redis)", host, resp[0]->port());
            }
        } catch (const io_error& e) {
            stop_all();
            throw config_error(e.what());  // e.g. the port is taken: one clear line, exit 2
        } catch (...) {
            stop_all();
            throw;
        }
        wait_for_stop();
        stop_all();
        return 0;
    });
}

// kv: a sharded in-memory key-value store speaking memcached's text protocol
// (and RESP2, wired by its own front end). Each key lives on its owner shard;
// connections are served on whichever shard accepted them and forward to the
// owners in batches.
#include <netinet/in.h>
#include <sys/resource.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "db.hpp"
#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/log.hpp"
#include "percore/sharded.hpp"
#include "persistence_setup.hpp"
#include "resp/resp_server.hpp"
#include "server.hpp"

namespace po = boost::program_options;
using namespace percore;

namespace {

// Every admitted connection needs a descriptor (the app shell raised the soft
// limit to the hard one): refuse to start rather than fail accepts later.
void check_fd_limit(std::size_t max_connections) {
    constexpr std::size_t reserve = 64;  // listeners, rings, eventfds, logs
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return;
    if (max_connections + reserve > lim.rlim_cur) {
        throw config_error("--max-connections " + std::to_string(max_connections) +
                           " needs about " + std::to_string(max_connections + reserve) +
                           " file descriptors but RLIMIT_NOFILE is " +
                           std::to_string(lim.rlim_cur) +
                           "; fix: lower --max-connections or raise the hard limit (ulimit -Hn)");
    }
}

kv::db_config read_config(const po::variables_map& opts) {
    kv::db_config config;
    config.max_memory = parse_size(opts["max-memory"].as<std::string>());
    config.evict = !opts["no-evict"].as<bool>();
    config.shared_reads = !opts["no-shared-reads"].as<bool>();
    config.max_connections = opts["max-connections"].as<std::size_t>();
    config.max_item_size = parse_size(opts["max-item-size"].as<std::string>());
    if (config.max_memory < 1024 * 1024)
        throw config_error("--max-memory " + opts["max-memory"].as<std::string>() +
                           " is below the minimum of 1M");
    if (config.max_item_size < 1024 || config.max_item_size > (std::size_t{512} << 20))
        throw config_error("--max-item-size " + opts["max-item-size"].as<std::string>() +
                           " is outside 1k..512M");
    if (config.max_connections == 0) throw config_error("--max-connections must be at least 1");
    config.idle_timeout = std::chrono::seconds(opts["idle-timeout"].as<unsigned>());
    config.max_output_buffer = parse_size(opts["max-output-buffer"].as<std::string>());
    if (config.max_output_buffer < 64 * 1024)
        throw config_error("--max-output-buffer " + opts["max-output-buffer"].as<std::string>() +
                           " is below the minimum of 64k");
    check_fd_limit(config.max_connections);
    auto& p = config.persistence;
    p.data_dir = opts["data-dir"].as<std::string>();
    p.fsync = kv::parse_fsync_mode(opts["fsync"].as<std::string>());
    p.repair = opts["repair-log"].as<bool>();
    p.rewrite_factor = opts["log-rewrite-factor"].as<double>();
    p.rewrite_min_size = parse_size(opts["log-rewrite-min-size"].as<std::string>());
    p.buffer_limit = parse_size(opts["log-buffer-limit"].as<std::string>());
    if (p.buffer_limit < 64 * 1024)
        throw config_error("--log-buffer-limit " + opts["log-buffer-limit"].as<std::string>() +
                           " is below the minimum of 64k");
    if (!(p.rewrite_factor >= 1.0 && p.rewrite_factor <= 1000.0))
        throw config_error("--log-rewrite-factor must be between 1 and 1000");
    return config;
}

// One warning line when clients beyond this host can reach a store that
// asks them for no password (memcached's protocol never does).
void warn_if_exposed(const std::string& host, std::uint16_t memcache_port, std::uint16_t redis_port,
                     const std::string& requirepass) {
    const socket_address a = socket_address::inet(host, 0);
    bool loopback = a.is_unix();
    if (a.family() == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(a.native());
        loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else if (a.family() == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a.native());
        loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                   (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
    }
    if (loopback) return;
    if (redis_port != 0 && requirepass.empty()) {
        logger().warn(
            "listening on the non-loopback address {} without --requirepass: anyone who "
            "can reach it can read, change and flush every key",
            host);
    } else if (memcache_port != 0) {
        logger().warn(
            "listening on the non-loopback address {}: the memcache protocol has no "
            "authentication (--requirepass only guards RESP; --memcache-port 0 turns "
            "it off)",
            host);
    }
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
        "no-shared-reads", po::bool_switch(),
        "send GETs of keys another shard owns to that shard instead of reading its store "
        "directly (a validated optimistic read; never with --fsync always)")(
        "max-connections", po::value<std::size_t>()->default_value(10000),
        "open connections over all shards; beyond it new ones get an error and are closed")(
        "idle-timeout", po::value<unsigned>()->default_value(300),
        "seconds a connection may stay silent, spend in one incomplete request or leave its "
        "replies unread before it is closed (0: never)")(
        "max-output-buffer", po::value<std::string>()->default_value("64M"),
        "reply bytes one connection may have pending (one reply alone always fits); past it the "
        "client gets an error and is disconnected")(
        "max-item-size", po::value<std::string>()->default_value("1M"),
        "largest memcached item (key + value + overhead), like memcached -I")(
        "data-dir", po::value<std::string>()->default_value(""),
        "keep the data in per-shard logs under this directory (empty: memory only)")(
        "fsync", po::value<std::string>()->default_value("everysec"),
        "with --data-dir: always (reply after the change is durable), everysec or no")(
        "repair-log", po::bool_switch(),
        "with --data-dir: truncate a log at a corrupt record instead of refusing to start")(
        "log-rewrite-factor", po::value<double>()->default_value(2.0),
        "with --data-dir: compact a shard's log when it passes this many times its live data")(
        "log-rewrite-min-size", po::value<std::string>()->default_value("64M"),
        "with --data-dir: no automatic compaction below this log size")(
        "log-buffer-limit", po::value<std::string>()->default_value("64M"),
        "with --data-dir: bytes of changes a shard keeps in memory before its log is written "
        "(a compaction's catch-up included); past it, writing clients wait for the disk");
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
            kv::open_persistence(database, config.persistence);
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
            warn_if_exposed(host, memcache_port, redis_port, opts["requirepass"].as<std::string>());
        } catch (const io_error& e) {
            stop_all();
            throw config_error(e.what());  // e.g. the port is taken: one clear line, exit 2
        } catch (...) {
            stop_all();
            throw;
        }
        wait_for_stop();
        stop_all();
        if (!kv::db_shard::logs_closed_cleanly()) {
            logger().error(
                "kv: exiting with status 1: a shard's log failed (see above), acknowledged "
                "changes may be missing from --data-dir");
            return 1;
        }
        return 0;
    });
}

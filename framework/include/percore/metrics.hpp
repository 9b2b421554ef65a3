// Observability: snapshots of every shard's counters and task queues, the
// --stats table, and a Prometheus endpoint (GET /metrics, text format 0.0.4)
// with one series per shard and queue (labels `shard`, `queue`).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "percore/scheduling.hpp"
#include "percore/stats.hpp"

namespace percore {

// One task queue's numbers, copied on its shard.
struct queue_snapshot {
    std::string name;
    unsigned shares = 0;
    std::int64_t latency_bound_ns = 0;  // 0: latency not important
    task_queue_stats stats;
};

// One app-defined number of a shard (see shard_gauge).
struct gauge_snapshot {
    std::string name;
    std::string help;
    double value = 0;
};

// One shard's numbers, copied on that shard.
struct shard_snapshot {
    unsigned shard = 0;
    shard_stats stats;
    std::vector<queue_snapshot> queues;  // the default queue first
    std::vector<gauge_snapshot> gauges;  // the app's, in registration order
};

// An app's own number on the calling shard, exported beside the framework's
// in the metrics (a Prometheus gauge with a `shard` label) and the --stats
// table. `read` runs on that shard at each snapshot. When the gauge is
// destroyed its last value stays (frozen), so that --stats, printed after the
// app's services stopped, still shows e.g. that a log failed. Registering a
// name again on the same shard replaces the old one. Build and destroy on one
// shard; `name` should be a valid Prometheus metric name.
class shard_gauge {
  public:
    shard_gauge(std::string name, std::string help, std::function<double()> read);
    ~shard_gauge();
    shard_gauge(const shard_gauge&) = delete;
    shard_gauge& operator=(const shard_gauge&) = delete;

  private:
    std::string name_;
    std::uint64_t id_;
};

// The calling shard's numbers.
shard_snapshot snapshot_this_shard();
// Every shard's numbers, gathered with submit_to; call from a fiber.
std::vector<shard_snapshot> snapshot_all_shards();

// The snapshots in Prometheus text exposition format.
std::string format_prometheus(const std::vector<shard_snapshot>& shards);
// The snapshots as the human-readable table --stats prints at exit.
std::string format_stats_table(const std::vector<shard_snapshot>& shards);

// Serves GET /metrics over HTTP/1.x on the calling shard (shard 0 in the app
// shell) from fibers; every answer gathers all shards afresh. Other paths get
// 404, other methods 405, malformed requests 400; each connection carries one
// request. Throws io_error if the port cannot be bound.
class metrics_server {
  public:
    // Listens on `address`, e.g. "0.0.0.0:9180" or "127.0.0.1:0".
    explicit metrics_server(const std::string& address);
    ~metrics_server();
    metrics_server(const metrics_server&) = delete;
    metrics_server& operator=(const metrics_server&) = delete;

    // The bound port (the real one when asked for port 0).
    std::uint16_t port() const noexcept;
    // Stops accepting and waits for the requests being answered.
    void stop();

    struct state;

  private:
    std::shared_ptr<state> state_;
};

namespace detail {
// The app shell's wrapper around main: serves metrics on `metrics_port`
// (0: off) while main runs, and with `print_stats` gathers the table into
// `table` after main returns (printed once the shards stopped).
std::function<int()> observed_main(std::function<int()> main, unsigned metrics_port,
                                   bool print_stats, std::shared_ptr<std::string> table);
}  // namespace detail

}  // namespace percore

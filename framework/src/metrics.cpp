#include "percore/metrics.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/net.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "percore/sync.hpp"
#include "percore/timer.hpp"

namespace percore {

// --- app gauges ---------------------------------------------------------------------

namespace {

struct registered_gauge {
    std::string name;
    std::string help;
    std::function<double()> read;  // empty once frozen
    double frozen = 0;
    std::uint64_t id = 0;  // of the live shard_gauge, 0 once frozen
};

// This shard's gauges (a shard is a thread: nothing shared).
thread_local std::vector<registered_gauge> shard_gauges;
thread_local std::uint64_t next_gauge_id = 1;

}  // namespace

shard_gauge::shard_gauge(std::string name, std::string help, std::function<double()> read)
    : name_(std::move(name)), id_(next_gauge_id++) {
    if (name_.empty()) throw std::invalid_argument("shard_gauge: empty name");
    registered_gauge g{name_, std::move(help), std::move(read), 0, id_};
    for (auto& existing : shard_gauges) {
        if (existing.name == name_) {
            existing = std::move(g);
            return;
        }
    }
    shard_gauges.push_back(std::move(g));
}

shard_gauge::~shard_gauge() {
    for (auto& g : shard_gauges) {
        if (g.id != id_) continue;
        try {
            g.frozen = g.read();
        } catch (...) {
            // Keeps the value of an earlier snapshot (0 if none).
        }
        g.read = nullptr;
        g.id = 0;
    }
}

// --- snapshots ----------------------------------------------------------------------

shard_snapshot snapshot_this_shard() {
    auto& r = reactor::local();
    shard_snapshot s;
    s.shard = r.shard_id();
    s.stats = r.stats();
    for (auto* q : r.queues()) {
        queue_snapshot qs;
        qs.name = q->name();
        qs.shares = q->shares();
        qs.latency_bound_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(q->latency_class().bound).count();
        qs.stats = q->stats();
        s.queues.push_back(std::move(qs));
    }
    for (const auto& g : shard_gauges)
        s.gauges.push_back({g.name, g.help, g.read ? g.read() : g.frozen});
    return s;
}

std::vector<shard_snapshot> snapshot_all_shards() {
    std::vector<shard_snapshot> all;
    unsigned self = this_shard_id();
    for (unsigned s = 0; s < shard_count(); ++s) {
        if (s == self) {
            all.push_back(snapshot_this_shard());
        } else {
            all.push_back(submit_to(s, [] { return snapshot_this_shard(); }).get());
        }
    }
    return all;
}

// --- Prometheus text format --------------------------------------------------------------

namespace {

std::string escape_label(std::string_view value) {
    std::string out;
    for (char c : value) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

double seconds(std::uint64_t ns) {
    return static_cast<double>(ns) / 1e9;
}

struct shard_metric {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const shard_stats&);
};

#define PERCORE_COUNT(field) [](const shard_stats& s) { return static_cast<double>(s.field); }
#define PERCORE_SECONDS(field) [](const shard_stats& s) { return seconds(s.field); }

// Every shard_stats field; a field added there belongs here too.
const shard_metric shard_metrics[] = {
    {"percore_loop_turns_total", "counter", "Reactor loop iterations.", PERCORE_COUNT(loop_turns)},
    {"percore_fibers_spawned_total", "counter", "Fibers started.", PERCORE_COUNT(fibers_spawned)},
    {"percore_tasks_run_total", "counter", "Times a fiber was resumed.", PERCORE_COUNT(tasks_run)},
    {"percore_io_submitted_total", "counter", "io_uring submissions handed to the kernel.",
     PERCORE_COUNT(io_submitted)},
    {"percore_io_completed_total", "counter", "io_uring completions reaped.",
     PERCORE_COUNT(io_completed)},
    {"percore_io_enter_calls_total", "counter", "io_uring_enter system calls.",
     PERCORE_COUNT(io_enter_calls)},
    {"percore_sleeps_total", "counter", "Times the reactor waited in its ring.",
     PERCORE_COUNT(sleeps)},
    {"percore_wakeups_received_total", "counter", "Wake-ups from other shards.",
     PERCORE_COUNT(wakeups_received)},
    {"percore_timers_fired_total", "counter", "Timers that expired.", PERCORE_COUNT(timers_fired)},
    {"percore_busy_seconds_total", "counter", "Time spent running fibers.",
     PERCORE_SECONDS(busy_ns)},
    {"percore_idle_seconds_total", "counter", "Time spent waiting in the ring.",
     PERCORE_SECONDS(idle_ns)},
    {"percore_stalls_total", "counter",
     "Fibers that ran past the stall threshold without yielding.", PERCORE_COUNT(stalls)},
    {"percore_smp_messages_sent_total", "counter", "Cross-shard messages sent.",
     PERCORE_COUNT(smp_messages_sent)},
    {"percore_smp_messages_received_total", "counter", "Cross-shard messages received.",
     PERCORE_COUNT(smp_messages_received)},
    {"percore_smp_ring_full_waits_total", "counter",
     "Cross-shard sends that waited for ring space.", PERCORE_COUNT(smp_ring_full_waits)},
    {"percore_file_reads_total", "counter", "File reads submitted.", PERCORE_COUNT(file_reads)},
    {"percore_file_writes_total", "counter", "File writes submitted.", PERCORE_COUNT(file_writes)},
    {"percore_file_read_bytes_total", "counter", "Bytes read from files.",
     PERCORE_COUNT(file_bytes_read)},
    {"percore_file_written_bytes_total", "counter", "Bytes written to files.",
     PERCORE_COUNT(file_bytes_written)},
    {"percore_file_fsyncs_total", "counter", "fsync and fdatasync calls.",
     PERCORE_COUNT(file_fsyncs)},
};

#undef PERCORE_COUNT
#undef PERCORE_SECONDS

struct queue_metric {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const queue_snapshot&);
};

const queue_metric queue_metrics[] = {
    {"percore_queue_runtime_seconds_total", "counter", "CPU time the task queue's fibers ran.",
     [](const queue_snapshot& q) { return seconds(q.stats.runtime_ns); }},
    {"percore_queue_tasks_run_total", "counter",
     "Times one of the task queue's fibers was resumed.",
     [](const queue_snapshot& q) { return static_cast<double>(q.stats.tasks_run); }},
    {"percore_queue_activations_total", "counter",
     "Times the task queue became runnable after idling.",
     [](const queue_snapshot& q) { return static_cast<double>(q.stats.activations); }},
    {"percore_queue_preemptions_total", "counter",
     "Slices of the task queue cut short while it had work.",
     [](const queue_snapshot& q) { return static_cast<double>(q.stats.preemptions); }},
    {"percore_queue_stalls_total", "counter", "Stall reports against the task queue's fibers.",
     [](const queue_snapshot& q) { return static_cast<double>(q.stats.stalls); }},
    {"percore_queue_shares", "gauge", "CPU shares of the task queue.",
     [](const queue_snapshot& q) { return static_cast<double>(q.shares); }},
    {"percore_queue_latency_bound_seconds", "gauge",
     "Latency bound of the task queue (0: not latency-sensitive).",
     [](const queue_snapshot& q) { return static_cast<double>(q.latency_bound_ns) / 1e9; }},
};

// Histogram buckets at 2^power ns: 1.024 us .. 8.6 s (exact internal bucket edges).
constexpr unsigned first_le_power = 10;
constexpr unsigned last_le_power = 33;

}  // namespace

std::string format_prometheus(const std::vector<shard_snapshot>& shards) {
    std::string out;
    for (const auto& m : shard_metrics) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", m.name, m.help, m.name, m.type);
        for (const auto& s : shards)
            out += fmt::format("{}{{shard=\"{}\"}} {}\n", m.name, s.shard, m.value(s.stats));
    }
    for (const auto& m : queue_metrics) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", m.name, m.help, m.name, m.type);
        for (const auto& s : shards) {
            for (const auto& q : s.queues) {
                out += fmt::format("{}{{shard=\"{}\",queue=\"{}\"}} {}\n", m.name, s.shard,
                                   escape_label(q.name), m.value(q));
            }
        }
    }
    // The apps' gauges: one family per name, whichever shards have it.
    std::vector<const gauge_snapshot*> families;
    for (const auto& s : shards) {
        for (const auto& g : s.gauges) {
            bool seen = false;
            for (const auto* f : families) seen = seen || f->name == g.name;
            if (!seen) families.push_back(&g);
        }
    }
    for (const auto* f : families) {
        out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", f->name, f->help, f->name);
        for (const auto& s : shards) {
            for (const auto& g : s.gauges) {
                if (g.name == f->name)
                    out += fmt::format("{}{{shard=\"{}\"}} {}\n", g.name, s.shard, g.value);
            }
        }
    }
    const char* h = "percore_queue_delay_seconds";
    out += fmt::format(
        "# HELP {} Time from a fiber becoming ready to running (sampled).\n# TYPE {} histogram\n",
        h, h);
    for (const auto& s : shards) {
        for (const auto& q : s.queues) {
            std::string labels =
                fmt::format("shard=\"{}\",queue=\"{}\"", s.shard, escape_label(q.name));
            const auto& d = q.stats.delay;
            for (unsigned p = first_le_power; p <= last_le_power; ++p) {
                out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", h, labels,
                                   seconds(std::uint64_t{1} << p), d.count_below_power_of_two(p));
            }
            out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", h, labels, d.count());
            out += fmt::format("{}_sum{{{}}} {}\n", h, labels, seconds(d.sum_ns()));
            out += fmt::format("{}_count{{{}}} {}\n", h, labels, d.count());
        }
    }
    return out;
}

std::string format_stats_table(const std::vector<shard_snapshot>& shards) {
    std::string out = "percore stats\n";
    out += fmt::format("{:>5} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}\n", "shard",
                       "busy_ms", "tasks_run", "io_subm", "io_compl", "smp_sent", "smp_recv",
                       "sleeps", "stalls");
    for (const auto& s : shards) {
        const auto& st = s.stats;
        out += fmt::format("{:>5} {:>12.1f} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}\n",
                           s.shard, static_cast<double>(st.busy_ns) / 1e6, st.tasks_run,
                           st.io_submitted, st.io_completed, st.smp_messages_sent,
                           st.smp_messages_received, st.sleeps, st.stalls);
    }
    out += fmt::format("{:>5} {:<16} {:>7} {:>9} {:>12} {:>12} {:>10} {:>10} {:>10} {:>7}\n",
                       "shard", "queue", "shares", "latency", "runtime_ms", "tasks_run",
                       "delay_p50", "delay_p99", "preempts", "stalls");
    for (const auto& s : shards) {
        for (const auto& q : s.queues) {
            const auto& d = q.stats.delay;
            auto us = [](std::uint64_t ns) {
                return fmt::format("{:.1f}us", static_cast<double>(ns) / 1e3);
            };
            out += fmt::format(
                "{:>5} {:<16} {:>7} {:>9} {:>12.1f} {:>12} {:>10} {:>10} {:>10} {:>7}\n", s.shard,
                q.name, q.shares,
                q.latency_bound_ns ? us(static_cast<std::uint64_t>(q.latency_bound_ns)) : "-",
                static_cast<double>(q.stats.runtime_ns) / 1e6, q.stats.tasks_run,
                d.count() ? us(d.quantile(0.5)) : "-", d.count() ? us(d.quantile(0.99)) : "-",
                q.stats.preemptions, q.stats.stalls);
        }
    }
    bool any_gauge = false;
    for (const auto& s : shards) any_gauge = any_gauge || !s.gauges.empty();
    if (any_gauge) {
        out += fmt::format("{:>5} {:<32} {:>14}\n", "shard", "gauge", "value");
        for (const auto& s : shards) {
            for (const auto& g : s.gauges)
                out += fmt::format("{:>5} {:<32} {:>14}\n", s.shard, g.name, g.value);
        }
    }
    return out;
}

// --- the HTTP endpoint -------------------------------------------------------------------

struct metrics_server::state {
    listener socket;
    gate requests;
    std::optional<future<void>> acceptor;
    bool stopped = false;
};

namespace {

constexpr std::size_t max_request = 8192;
constexpr std::size_t max_connections = 32;

void respond(connection& c, std::string_view status, std::string_view content_type,
             std::string_view body, bool head_only, std::string_view extra_headers = {}) {
    std::string response = fmt::format(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        status, content_type, body.size(), extra_headers);
    if (!head_only) response += body;
    c.write_all(response);
}

void serve(connection& c) {
    std::string request;
    char buffer[2048];
    const time_point deadline = clock::now() + std::chrono::seconds(5);
    while (request.find("\r\n\r\n") == std::string::npos) {
        if (request.size() > max_request) {
            respond(c, "431 Request Header Fields Too Large", "text/plain", "request too large\n",
                    false);
            return;
        }
        std::size_t n = c.read(buffer, deadline);
        if (n == 0) return;
        request.append(buffer, n);
    }
    std::string_view line(request.data(), request.find("\r\n"));
    auto first_space = line.find(' ');
    auto second_space =
        first_space == std::string_view::npos ? first_space : line.find(' ', first_space + 1);
    if (second_space == std::string_view::npos ||
        line.substr(second_space + 1).substr(0, 5) != "HTTP/") {
        respond(c, "400 Bad Request", "text/plain", "malformed request line\n", false);
        return;
    }
    std::string_view method = line.substr(0, first_space);
    std::string_view target = line.substr(first_space + 1, second_space - first_space - 1);
    target = target.substr(0, target.find('?'));
    bool head = method == "HEAD";
    if (method != "GET" && !head) {
        respond(c, "405 Method Not Allowed", "text/plain", "only GET\n", false,
                "Allow: GET, HEAD\r\n");
        return;
    }
    if (target != "/metrics") {
        respond(c, "404 Not Found", "text/plain", "try /metrics\n", head);
        return;
    }
    respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
            format_prometheus(snapshot_all_shards()), head);
}

void accept_loop(const std::shared_ptr<metrics_server::state>& s) {
    for (;;) {
        connection c;
        try {
            c = s->socket.accept();
        } catch (const io_error& e) {
            if (e.error_number() == ECANCELED || s->stopped) return;
            logger().warn("metrics: accept failed: {}", e.what());
            sleep_for(std::chrono::milliseconds(100));  // e.g. EMFILE: do not spin
            continue;
        } catch (const shutdown_error&) {
            return;
        }
        if (s->stopped) return;
        if (s->requests.count() >= max_connections) continue;  // closes c: bounded work
        gate::holder hold(s->requests);
        auto detached = spawn({.name = "metrics-http"},
                              [s, hold = std::move(hold), c = std::move(c)]() mutable {
                                  try {
                                      serve(c);
                                  } catch (const io_error& e) {
                                      logger().debug("metrics: connection failed: {}", e.what());
                                  } catch (const timeout_error&) {
                                      logger().debug("metrics: client too slow, closing");
                                  }
                              });
    }
}

}  // namespace

metrics_server::metrics_server(const std::string& address) : state_(std::make_shared<state>()) {
    state_->socket = listen(socket_address::parse(address), listen_options{.reuse_port = false});
    auto s = state_;
    state_->acceptor = spawn({.name = "metrics-accept"}, [s] { accept_loop(s); });
}

metrics_server::~metrics_server() {
    try {
        stop();
    } catch (const std::exception& e) {
        logger().warn("metrics: stopping the server: {}", e.what());
    }
}

std::uint16_t metrics_server::port() const noexcept {
    return state_->socket.local_address().port();
}

void metrics_server::stop() {
    if (state_->stopped) return;
    state_->stopped = true;
    state_->socket.close();
    if (state_->acceptor) state_->acceptor->get();
    state_->requests.close();
}

namespace detail {

std::function<int()> observed_main(std::function<int()> main, unsigned metrics_port,
                                   bool print_stats, std::shared_ptr<std::string> table) {
    return [main = std::move(main), metrics_port, print_stats, table]() -> int {
        std::unique_ptr<metrics_server> server;
        if (metrics_port != 0) {
            try {
                // Loopback only, like the apps' default --address: the metrics
                // name shards, sizes and load, which is nobody else's business.
                server =
                    std::make_unique<metrics_server>("127.0.0.1:" + std::to_string(metrics_port));
            } catch (const io_error& e) {
                throw config_error("cannot serve metrics on port " + std::to_string(metrics_port) +
                                   ": " + e.what());
            }
            logger().info("metrics: http://127.0.0.1:{}/metrics", server->port());
        }
        int result = main();
        if (server) server->stop();
        if (print_stats && table) *table = format_stats_table(snapshot_all_shards());
        return result;
    };
}

}  // namespace detail

}  // namespace percore

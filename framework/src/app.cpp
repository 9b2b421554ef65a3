#include "percore/app.hpp"

#include <numa.h>
#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "percore/errors.hpp"
#include "percore/log.hpp"
#include "percore/metrics.hpp"
#include "uring_setup.hpp"

namespace po = boost::program_options;

namespace percore {

namespace {

unsigned parse_unsigned(const std::string& text, const std::string& whole) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
        throw config_error("bad CPU list '" + whole + "': '" + text + "' is not a CPU number");
    }
    return value;
}

// Servers hold a descriptor per connection: take the soft RLIMIT_NOFILE up to
// the hard limit (the usual 1024 soft limit is far below what they need).
void raise_fd_limit() {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
    const rlim_t before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
        logger().warn("could not raise RLIMIT_NOFILE from {} to {}: errno {}", before, lim.rlim_max,
                      errno);
    }
}

std::set<unsigned> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::set<unsigned> cpus;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
    for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &set)) cpus.insert(c);
    }
    return cpus;
}

std::set<unsigned> online_cpus() {
    std::ifstream in("/sys/devices/system/cpu/online");
    std::string line;
    if (!std::getline(in, line)) return {};
    auto list = parse_cpu_list(line);
    return {list.begin(), list.end()};
}

std::string join(const std::vector<unsigned>& v) {
    std::string s;
    for (auto c : v) s += (s.empty() ? "" : ",") + std::to_string(c);
    return s;
}

// Fails early, on the main thread, with advice, if this process cannot use
// io_uring at all (disabled by sysctl, blocked by seccomp, memlock too low).
void probe_io_uring(unsigned depth) {
    io_uring ring{};
    int r = setup_ring(ring, depth);
    if (r < 0) throw config_error(explain_io_uring_failure(-r));
    io_uring_queue_exit(&ring);
}

}  // namespace

std::vector<unsigned> parse_cpu_list(const std::string& text) {
    std::set<unsigned> cpus;
    std::stringstream in(text);
    std::string part;
    while (std::getline(in, part, ',')) {
        auto dash = part.find('-');
        if (dash == std::string::npos) {
            cpus.insert(parse_unsigned(part, text));
            continue;
        }
        unsigned first = parse_unsigned(part.substr(0, dash), text);
        unsigned last = parse_unsigned(part.substr(dash + 1), text);
        if (last < first)
            throw config_error("bad CPU list '" + text + "': range " + part + " is backwards");
        if (last >= CPU_SETSIZE)
            throw config_error("bad CPU list '" + text + "': CPU " + std::to_string(last) +
                               " is too large");
        for (unsigned c = first; c <= last; ++c) cpus.insert(c);
    }
    if (cpus.empty()) throw config_error("bad CPU list '" + text + "': no CPUs");
    return {cpus.begin(), cpus.end()};
}

std::size_t parse_size(const std::string& text) {
    std::size_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end == text.data()) {
        throw config_error("bad size '" + text + "' (use e.g. 4096, 64K, 512M, 2G)");
    }
    std::string suffix(end, text.data() + text.size());
    std::transform(suffix.begin(), suffix.end(), suffix.begin(), ::toupper);
    std::size_t multiplier = 1;
    if (suffix == "" || suffix == "B") {
        multiplier = 1;
    } else if (suffix == "K" || suffix == "KB" || suffix == "KIB") {
        multiplier = std::size_t{1} << 10;
    } else if (suffix == "M" || suffix == "MB" || suffix == "MIB") {
        multiplier = std::size_t{1} << 20;
    } else if (suffix == "G" || suffix == "GB" || suffix == "GIB") {
        multiplier = std::size_t{1} << 30;
    } else if (suffix == "T" || suffix == "TB" || suffix == "TIB") {
        multiplier = std::size_t{1} << 40;
    } else {
        throw config_error("bad size '" + text + "': unknown unit '" + suffix +
                           "' (use K, M, G or T)");
    }
    if (value > SIZE_MAX / multiplier) throw config_error("bad size '" + text + "': too large");
    return value * multiplier;
}

app::app(std::string name, std::string description)
    : name_(std::move(name)),
      description_(std::move(description)),
      app_options_(name_ + " options"),
      shell_options_("percore options") {
    shell_options_.add_options()("help,h", "print this help and exit")(
        "smp,c", po::value<unsigned>(), "number of shards (default: one per allowed CPU)")(
        "cpuset", po::value<std::string>(), "CPUs to run the shards on, e.g. 0-3,6")(
        "overprovisioned", po::bool_switch(),
        "allow more shards than CPUs; shards are then not pinned")(
        "ring-depth", po::value<unsigned>()->default_value(1024),
        "io_uring submission queue entries per shard")(
        "task-quota-us", po::value<unsigned>()->default_value(500),
        "how long fibers run before the reactor polls again (microseconds)")(
        "idle-poll-us", po::value<unsigned>()->default_value(0),
        "busy-poll this long before a shard sleeps (microseconds)")(
        "stall-threshold-ms", po::value<unsigned>()->default_value(25),
        "report fibers that run this long without yielding (0: off)")(
        "stats", po::bool_switch(), "print per-shard and per-task-queue stats at exit")(
        "metrics-port", po::value<unsigned>(),
        "serve Prometheus metrics on this TCP port (GET /metrics)")(
        "log-level", po::value<std::string>()->default_value("info"),
        "trace, debug, info, warn, error, critical or off");
}

po::options_description_easy_init app::add_options() {
    return app_options_.add_options();
}

void app::configure() {
    set_log_level(options_["log-level"].as<std::string>());
    bool overprovisioned = options_["overprovisioned"].as<bool>();

    std::set<unsigned> allowed = allowed_cpus();
    std::set<unsigned> online = online_cpus();
    std::vector<unsigned> cpus;
    if (options_.count("cpuset")) {
        cpus = parse_cpu_list(options_["cpuset"].as<std::string>());
        for (unsigned c : cpus) {
            if (!online.empty() && !online.count(c)) {
                throw config_error("CPU " + std::to_string(c) +
                                   " in --cpuset is not online; fix: choose from the online CPUs");
            }
            if (!allowed.count(c)) {
                throw config_error(
                    "CPU " + std::to_string(c) +
                    " in --cpuset is outside this process's CPU affinity; fix: choose from " +
                    join({allowed.begin(), allowed.end()}));
            }
        }
    } else {
        cpus.assign(allowed.begin(), allowed.end());
    }

    unsigned smp =
        options_.count("smp") ? options_["smp"].as<unsigned>() : static_cast<unsigned>(cpus.size());
    if (smp == 0) throw config_error("--smp must be at least 1");
    if (smp > 1024)
        throw config_error("--smp " + std::to_string(smp) + " is too large (at most 1024)");
    if (smp > cpus.size() && !overprovisioned) {
        throw config_error("--smp " + std::to_string(smp) + " is larger than the " +
                           std::to_string(cpus.size()) + " CPUs available (" + join(cpus) +
                           "); fix: lower --smp or add --overprovisioned");
    }

    unsigned ring_depth = options_["ring-depth"].as<unsigned>();
    if (ring_depth < 8 || ring_depth > 32768) {
        throw config_error("--ring-depth " + std::to_string(ring_depth) +
                           " is out of range (8 to 32768)");
    }
    unsigned quota = options_["task-quota-us"].as<unsigned>();
    if (quota == 0 || quota > 1'000'000)
        throw config_error("--task-quota-us must be between 1 and 1000000");

    config_.smp = smp;
    config_.cpus.clear();
    if (!overprovisioned) config_.cpus.assign(cpus.begin(), cpus.begin() + smp);
    config_.reactor.ring_depth = ring_depth;
    config_.reactor.task_quota = std::chrono::microseconds(quota);
    config_.reactor.idle_poll = std::chrono::microseconds(options_["idle-poll-us"].as<unsigned>());
    unsigned stall_ms = options_["stall-threshold-ms"].as<unsigned>();
    if (stall_ms > 3'600'000)
        throw config_error("--stall-threshold-ms must be at most 3600000 (0 turns it off)");
    config_.reactor.stall_threshold = std::chrono::milliseconds(stall_ms);
    if (options_.count("metrics-port") && (options_["metrics-port"].as<unsigned>() == 0 ||
                                           options_["metrics-port"].as<unsigned>() > 65535)) {
        throw config_error("--metrics-port must be between 1 and 65535");
    }
    config_.handle_signals = true;
}

int app::run(int argc, char** argv, std::function<int()> main) {
    try {
        po::options_description all;
        all.add(shell_options_).add(app_options_);
        po::store(po::parse_command_line(argc, argv, all), options_);
        if (options_.count("help")) {
            std::cout << name_ << (description_.empty() ? "" : ": " + description_) << "\n\n"
                      << "usage: " << name_ << " [options]\n\n"
                      << app_options_ << "\n"
                      << shell_options_;
            return 0;
        }
        po::notify(options_);
        raise_fd_limit();
        configure();
        probe_io_uring(config_.reactor.ring_depth);
    } catch (const po::error& e) {
        std::fprintf(stderr, "%s: error: %s (see --help)\n", name_.c_str(), e.what());
        return 2;
    } catch (const config_error& e) {
        std::fprintf(stderr, "%s: error: %s\n", name_.c_str(), e.what());
        return 2;
    }

    std::string where =
        config_.cpus.empty() ? "unpinned (--overprovisioned)" : "on CPUs " + join(config_.cpus);
    std::string nodes;
    if (numa_available() >= 0 && !config_.cpus.empty()) {
        std::vector<unsigned> node_of;
        for (unsigned c : config_.cpus)
            node_of.push_back(
                static_cast<unsigned>(std::max(0, numa_node_of_cpu(static_cast<int>(c)))));
        nodes = ", NUMA nodes " + join(node_of);
    }
    logger().info("{}: {} shard{} {}{}", name_, config_.smp, config_.smp == 1 ? "" : "s", where,
                  nodes);

    try {
        auto table = std::make_shared<std::string>();
        unsigned metrics_port =
            options_.count("metrics-port") ? options_["metrics-port"].as<unsigned>() : 0;
        int result =
            run_shards(config_, detail::observed_main(std::move(main), metrics_port,
                                                      options_["stats"].as<bool>(), table));
        if (!table->empty()) std::fputs(table->c_str(), stdout);
        return result;
    } catch (const config_error& e) {
        std::fprintf(stderr, "%s: error: %s\n", name_.c_str(), e.what());
        return 2;
    }
}

}  // namespace percore

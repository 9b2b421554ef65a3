// The app shell, tested through a real binary (helpers/app_probe): options,
// CPU choice, clear one-line failures with exit code 2, signals.
#include <catch2/catch.hpp>

#include <sched.h>
#include <signal.h>

#include <algorithm>

#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "process.hpp"

using namespace percore::testing;

namespace {

std::string probe() {
    return built_binary("APP_PROBE");
}

unsigned allowed_cpu_count() {
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof(set), &set);
    return static_cast<unsigned>(CPU_COUNT(&set));
}

// One line on stderr, naming the problem; exit code 2.
void require_clear_failure(const process_result& r, const std::string& needle) {
    INFO("stderr: " << r.err);
    REQUIRE_FALSE(r.timed_out);
    REQUIRE(r.exit_code == 2);
    REQUIRE(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    REQUIRE(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("--help prints the shell's and the app's options and exits 0") {
    auto r = run_process({probe(), "--help"});
    REQUIRE(r.exit_code == 0);
    for (auto opt : {"--smp", "--cpuset", "--overprovisioned", "--ring-depth", "--task-quota-us",
                     "--log-level", "--wait"}) {
        REQUIRE(r.out.find(opt) != std::string::npos);
    }
}

TEST_CASE("the default is one shard per allowed CPU") {
    auto r = run_process({probe()});
    REQUIRE(r.exit_code == 0);
    REQUIRE(r.out.find("shards=" + std::to_string(allowed_cpu_count())) != std::string::npos);
}

TEST_CASE("--smp and --cpuset choose and pin the shards") {
    auto r = run_process({probe(), "--smp", "1", "--cpuset", "0"});
    REQUIRE(r.exit_code == 0);
    REQUIRE(r.out.find("shards=1 cpus=0") != std::string::npos);
}

TEST_CASE("more shards than CPUs need --overprovisioned") {
    std::string many = std::to_string(allowed_cpu_count() * 4);
    require_clear_failure(run_process({probe(), "--smp", many}), "--overprovisioned");
    auto r = run_process({probe(), "--smp", many, "--overprovisioned"});
    REQUIRE(r.exit_code == 0);
    REQUIRE(r.out.find("shards=" + many + " cpus=none") != std::string::npos);
}

TEST_CASE("unknown and malformed options end with one clear line") {
    require_clear_failure(run_process({probe(), "--no-such-option"}), "unrecognised option");
    require_clear_failure(run_process({probe(), "--smp", "many"}), "--smp");
    require_clear_failure(run_process({probe(), "--smp", "0"}), "--smp");
    require_clear_failure(run_process({probe(), "--cpuset", "1-x"}), "bad CPU list");
    require_clear_failure(run_process({probe(), "--cpuset", "3-1"}), "backwards");
    require_clear_failure(run_process({probe(), "--log-level", "loud"}), "unknown log level");
    require_clear_failure(run_process({probe(), "--ring-depth", "1"}), "--ring-depth");
    require_clear_failure(run_process({probe(), "--task-quota-us", "0"}), "--task-quota-us");
}

TEST_CASE("a CPU that is offline or outside the affinity mask is refused") {
    require_clear_failure(run_process({probe(), "--cpuset", "1000"}), "not online");
    if (allowed_cpu_count() >= 2) {
        // taskset narrows the child's affinity to CPU 0, then we ask for CPU 1.
        require_clear_failure(
            run_process({"/usr/bin/taskset", "-c", "0", probe(), "--cpuset", "1"}),
            "outside this process's CPU affinity");
    }
}

TEST_CASE("io_uring blocked by seccomp ends with advice, not a crash") {
    auto deny = built_binary("DENY_IO_URING");
    auto r = run_process({deny, probe()});
    require_clear_failure(r, "io_uring is unavailable");
    REQUIRE(r.err.find("seccomp") != std::string::npos);
    auto r2 = run_process({deny, "--errno", "ENOSYS", probe()});
    require_clear_failure(r2, "io_uring is unavailable");
}

TEST_CASE("SIGTERM and SIGINT reach the main fiber, which stops cleanly with exit 0") {
    for (int sig : {SIGTERM, SIGINT}) {
        child_process child({probe(), "--smp", "2", "--overprovisioned", "--wait"});
        REQUIRE(child.wait_for_output("waiting", std::chrono::seconds(10)));
        child.signal(sig);
        auto r = child.wait(std::chrono::seconds(5));
        INFO("stderr: " << r.err);
        REQUIRE_FALSE(r.timed_out);
        REQUIRE(r.exit_code == 0);
        REQUIRE(r.out.find("stopped") != std::string::npos);
    }
}

TEST_CASE("parse_cpu_list and parse_size") {
    REQUIRE(percore::parse_cpu_list("0-3,6") == std::vector<unsigned>{0, 1, 2, 3, 6});
    REQUIRE(percore::parse_cpu_list("2,1,2") == std::vector<unsigned>{1, 2});
    REQUIRE_THROWS_AS(percore::parse_cpu_list(""), percore::config_error);
    REQUIRE_THROWS_AS(percore::parse_cpu_list("a"), percore::config_error);
    REQUIRE(percore::parse_size("512M") == 512ull << 20);
    REQUIRE(percore::parse_size("2G") == 2ull << 30);
    REQUIRE(percore::parse_size("4096") == 4096);
    REQUIRE(percore::parse_size("64k") == 64ull << 10);
    REQUIRE_THROWS_AS(percore::parse_size("12X"), percore::config_error);
    REQUIRE_THROWS_AS(percore::parse_size("M"), percore::config_error);
    REQUIRE_THROWS_AS(percore::parse_size("99999999999999999999G"), percore::config_error);
}

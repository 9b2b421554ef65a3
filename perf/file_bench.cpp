// build/perf/file-bench: O_DIRECT file I/O through percore's dma_file on one
// shard, shaped like fio's io_uring engine so perf/compare-file can put the
// two side by side:
//   file-bench --file PATH --mode randread|seqread|seqwrite --block BYTES
//              --depth N --duration SECONDS [--size 1G] [--cpu N]
//              [--idle-poll-us N] [--device-submit-batch N]
// `depth` fibers each keep one operation in flight. The file is created and
// filled (random bytes) when missing or smaller than --size. Prints one line:
//   iops=... MBps=... p50_us=... p99_us=... cpu_pct=... enters_per_op=...
#include <sys/resource.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/file.hpp"
#include "percore/reactor.hpp"
#include "percore/runtime.hpp"
#include "percore/timer.hpp"

namespace po = boost::program_options;
using namespace percore;

namespace {

struct bench_options {
    std::string file;
    std::string mode = "randread";
    std::size_t block = 4096;
    unsigned depth = 1;
    double duration = 5;
    std::uint64_t size = 1ull << 30;
};

// User + system CPU time of the process so far.
double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// Creates or extends the file to `size` bytes of random data (not zeros, so
// no layer can shortcut them), durable before the measurement.
void prepare_file(const bench_options& o) {
    std::error_code ec;
    auto existing = std::filesystem::file_size(o.file, ec);
    if (!ec && existing >= o.size) return;
    std::fprintf(stderr, "file-bench: filling %s with %llu bytes\n", o.file.c_str(),
                 static_cast<unsigned long long>(o.size));
    dma_stream_writer w(dma_file::create_truncated(o.file),
                        stream_options{.buffer_size = 1 << 20, .buffers = 8});
    std::mt19937_64 rng(12345);
    std::vector<std::uint64_t> chunk((1 << 20) / 8);
    for (std::uint64_t done = 0; done < o.size;) {
        for (auto& x : chunk) x = rng();
        std::size_t n = std::min<std::uint64_t>(o.size - done, chunk.size() * 8);
        w.write(chunk.data(), n);
        done += n;
    }
    w.close();
}

int run(const bench_options& o) {
    if (o.mode != "randread" && o.mode != "seqread" && o.mode != "seqwrite") {
        throw config_error("--mode must be randread, seqread or seqwrite (not '" + o.mode + "')");
    }
    if (o.depth == 0 || o.depth > 4096) throw config_error("--depth must be 1..4096");
    if (o.duration <= 0) throw config_error("--duration must be positive");
    prepare_file(o);
    auto file = dma_file::open(o.file);
    if (o.block == 0 || o.block % file.alignment() != 0) {
        throw config_error("--block must be a multiple of the file's alignment " +
                           std::to_string(file.alignment()));
    }
    const std::uint64_t blocks = file.size() / o.block;
    if (blocks == 0) throw config_error("--block is larger than the file");
    const bool write = o.mode == "seqwrite";
    const bool random = o.mode == "randread";

    std::vector<std::uint32_t> latencies_ns;  // one per completed operation
    latencies_ns.reserve(1 << 20);
    std::uint64_t cursor = 0;  // next block of the sequential modes
    bool stop = false;
    const auto start = clock::now();
    const auto end =
        start + std::chrono::duration_cast<duration>(std::chrono::duration<double>(o.duration));
    const shard_stats stats_before = reactor::local().stats();
    const double cpu_before = cpu_seconds();
    std::vector<future<void>> workers;
    for (unsigned d = 0; d < o.depth; ++d) {
        workers.push_back(spawn([&, d] {
            auto buf = file.allocate_buffer(o.block);
            std::memset(buf.data(), 0x5a + d, buf.size());
            std::mt19937_64 rng(d + 1);
            while (!stop) {
                std::uint64_t b = random ? rng() % blocks : cursor++ % blocks;
                auto t0 = clock::now();
                if (write) {
                    file.write_at(b * o.block, buf);
                } else if (file.read_into(b * o.block, buf.data(), o.block) != o.block) {
                    throw io_error(EIO, "short read in " + o.file);
                }
                auto t1 = clock::now();
                latencies_ns.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(),
                    UINT32_MAX)));
                if (t1 >= end) stop = true;
            }
        }));
    }
    for (auto& w : workers) w.get();
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    const double cpu = cpu_seconds() - cpu_before;
    const auto& stats = reactor::local().stats();
    const double enters = static_cast<double>(stats.io_enter_calls - stats_before.io_enter_calls);
    file.close();

    std::sort(latencies_ns.begin(), latencies_ns.end());
    auto pct = [&](double p) {
        if (latencies_ns.empty()) return 0.0;
        std::size_t i =
            std::min(latencies_ns.size() - 1, static_cast<std::size_t>(p * latencies_ns.size()));
        return latencies_ns[i] / 1000.0;
    };
    const double iops = latencies_ns.size() / elapsed;
    // After the four figures: CPU use (user + system, % of one CPU) and
    // io_uring_enter calls per operation, to see what batching buys.
    const double ops = std::max<double>(1, static_cast<double>(latencies_ns.size()));
    std::printf("iops=%.0f MBps=%.1f p50_us=%.1f p99_us=%.1f cpu_pct=%.1f enters_per_op=%.2f\n",
                iops, iops * o.block / 1e6, pct(0.50), pct(0.99), 100 * cpu / elapsed,
                enters / ops);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    bench_options o;
    std::string block = "4096", size = "1G";
    int cpu = -1;
    unsigned idle_poll_us = 0;
    unsigned submit_batch = reactor_config{}.device_submit_batch;
    po::options_description desc("file-bench: dma_file throughput and latency on one shard");
    desc.add_options()("help,h", "this help")("file", po::value(&o.file)->required(),
                                              "the file (created and filled when missing)")(
        "mode", po::value(&o.mode)->default_value(o.mode), "randread | seqread | seqwrite")(
        "block", po::value(&block)->default_value(block), "bytes per operation (4k, 128k...)")(
        "depth", po::value(&o.depth)->default_value(o.depth), "operations in flight")(
        "duration", po::value(&o.duration)->default_value(o.duration), "seconds to run")(
        "size", po::value(&size)->default_value(size), "file size to create / use")(
        "cpu", po::value(&cpu)->default_value(cpu), "pin the shard to this CPU (-1: no pinning)")(
        "idle-poll-us", po::value(&idle_poll_us)->default_value(idle_poll_us),
        "busy-poll this long before the shard sleeps (as the apps' --idle-poll-us)")(
        "device-submit-batch", po::value(&submit_batch)->default_value(submit_batch),
        "submit once this many reads/writes are queued (0: once per loop turn)");
    try {
        po::variables_map vm;
        po::store(po::parse_command_line(argc, argv, desc), vm);
        if (vm.count("help")) {
            std::cout << desc << "\n";
            return 0;
        }
        po::notify(vm);
        o.block = parse_size(block);
        o.size = parse_size(size);
        runtime_config config;
        config.smp = 1;
        if (cpu >= 0) config.cpus = {static_cast<unsigned>(cpu)};
        config.reactor.idle_poll = std::chrono::microseconds(idle_poll_us);
        config.reactor.device_submit_batch = submit_batch;
        return run_shards(config, [&] { return run(o); });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "file-bench: %s\n", e.what());
        return 2;
    }
}

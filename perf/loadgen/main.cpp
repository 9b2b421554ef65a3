// loadgen: drives a server with many connections from percore itself and
// prints one summary line:
//   requests_per_s=... p50_us=... p99_us=... p999_us=... errors=... hits=... misses=...
// (or, with --json, one JSON object with the same fields). hits and misses
// count the kv modes' GET replies in the measured window.
// Closed loop by default (--pipeline requests in flight per connection); with
// --rate, open loop at a fixed offered rate, latency counted from each
// request's scheduled time (no coordinated omission). Every reply byte is
// checked by the mode. Connects only to --address:--port, exits by itself.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "mode.hpp"
#include "percore/app.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/net.hpp"
#include "percore/smp.hpp"
#include "percore/stream.hpp"
#include "percore/sync.hpp"
#include "percore/timer.hpp"

namespace po = boost::program_options;
using namespace percore;
using namespace loadgen;

namespace {

// Latencies in nanoseconds, log-linear buckets: 64 per power of two
// (about 1.5% precision), bounded memory whatever the run length.
class histogram {
  public:
    static constexpr unsigned sub_bits = 6;
    static constexpr unsigned buckets = (64 - sub_bits + 1) << sub_bits;

    histogram() : counts_(buckets, 0) {}

    void record(std::uint64_t ns) {
        ++counts_[index(ns)];
        ++total_;
    }
    void merge(const histogram& other) {
        for (unsigned i = 0; i < buckets; ++i) counts_[i] += other.counts_[i];
        total_ += other.total_;
    }
    std::uint64_t total() const { return total_; }
    // The value below which `q` of the samples fall (upper bucket bound).
    std::uint64_t quantile(double q) const {
        if (total_ == 0) return 0;
        auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_)));
        rank = std::max<std::uint64_t>(rank, 1);
        std::uint64_t seen = 0;
        for (unsigned i = 0; i < buckets; ++i) {
            seen += counts_[i];
            if (seen >= rank) return upper(i);
        }
        return upper(buckets - 1);
    }

  private:
    static unsigned index(std::uint64_t v) {
        if (v < (1u << sub_bits)) return static_cast<unsigned>(v);
        unsigned e = 63 - static_cast<unsigned>(std::countl_zero(v));  // >= sub_bits
        unsigned sub = static_cast<unsigned>(v >> (e - sub_bits)) & ((1u << sub_bits) - 1);
        return ((e - sub_bits + 1) << sub_bits) + sub;
    }
    static std::uint64_t upper(unsigned i) {
        if (i < (1u << sub_bits)) return i;
        unsigned e = (i >> sub_bits) + sub_bits - 1;
        std::uint64_t sub = i & ((1u << sub_bits) - 1);
        return ((std::uint64_t{1} << sub_bits) + sub + 1) << (e - sub_bits);
    }

    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
};

struct settings {
    socket_address address;
    std::string mode_name;
    mode_options protocol;
    unsigned connections = 64;
    unsigned pipeline = 1;
    double rate = 0;           // total requests/s; 0: closed loop
    time_point start;          // connections open from here
    time_point measure_start;  // after the warm-up
    time_point end;
};

struct shard_result {
    histogram latencies;
    std::uint64_t errors = 0;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
};

std::uint64_t ns_between(time_point a, time_point b) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

// Counts an error once and says what it was (the first few times).
void report_error(shard_result& result, unsigned id, const std::string& what) {
    if (result.errors++ < 5) logger().warn("connection {}: {}", id, what);
}

void count_kind(shard_result& result, reply_kind kind) {
    if (kind == reply_kind::hit) ++result.hits;
    if (kind == reply_kind::miss) ++result.misses;
}

void closed_loop(const settings& s, mode& m, unsigned id, connection& conn, shard_result& result) {
    input_stream in(conn);
    in.set_deadline(s.end + std::chrono::seconds(5));
    std::vector<time_point> sent_at(s.pipeline);
    std::uint64_t sent = 0, received = 0;
    std::string batch;
    auto send_more = [&](time_point now) {
        batch.clear();
        while (sent - received < s.pipeline && now < s.end) {
            m.make_request(id, sent, batch);
            sent_at[sent % s.pipeline] = now;
            ++sent;
        }
        if (!batch.empty()) conn.write_all(std::string_view(batch));
    };
    send_more(clock::now());
    while (received < sent) {
        const reply_kind kind = m.check_reply(id, received, in);
        if (kind == reply_kind::wrong) {
            report_error(result, id,
                         "reply " + std::to_string(received) + " is wrong or cut short");
            return;
        }
        time_point now = clock::now();
        if (now >= s.measure_start && now < s.end) {
            result.latencies.record(ns_between(sent_at[received % s.pipeline], now));
            count_kind(result, kind);
        }
        ++received;
        if (in.buffered().empty()) send_more(now);
    }
}

void open_loop(const settings& s, mode& m, unsigned id, connection& conn, shard_result& result) {
    // Per connection: rate / connections, staggered so they do not send in step.
    auto interval =
        std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * s.connections / s.rate));
    std::vector<time_point> scheduled(s.pipeline);
    std::uint64_t sent = 0, received = 0;
    bool done = false;
    semaphore window(s.pipeline);  // requests allowed in flight
    semaphore outstanding(0);      // requests (or the end) the receiver may wait for
    auto receiver = spawn({.name = "loadgen receiver"}, [&] {
        // Whatever ends the receiver (a reset, a timeout) must not leave the
        // sender waiting for a window slot.
        struct release_sender {
            bool& done;
            semaphore& window;
            unsigned slots;
            ~release_sender() {
                done = true;
                window.signal(slots);
            }
        } release{done, window, s.pipeline};
        input_stream in(conn);
        in.set_deadline(s.end + std::chrono::seconds(5));
        for (;;) {
            outstanding.wait();
            if (received == sent && done) return;
            const reply_kind kind = m.check_reply(id, received, in);
            if (kind == reply_kind::wrong) {
                report_error(result, id,
                             "reply " + std::to_string(received) + " is wrong or cut short");
                conn.shutdown(SHUT_RDWR);
                done = true;
                window.signal(s.pipeline);  // the sender may wait for a slot: let it see `done`
                return;
            }
            time_point now = clock::now();
            if (now >= s.measure_start && now < s.end) {
                result.latencies.record(ns_between(scheduled[received % s.pipeline], now));
                count_kind(result, kind);
            }
            ++received;
            window.signal();
        }
    });
    std::string request;
    time_point next = s.start + interval * id / s.connections;
    try {
        while (next < s.end && !done) {
            sleep_until(next);
            if (!window.wait_until(s.end + std::chrono::seconds(5))) {
                throw timeout_error("no reply for " + std::to_string(s.pipeline) +
                                    " requests in flight");
            }
            if (done) break;
            request.clear();
            m.make_request(id, sent, request);
            scheduled[sent % s.pipeline] = next;
            ++sent;
            conn.write_all(std::string_view(request));
            outstanding.signal();
            next += interval;
        }
    } catch (...) {
        done = true;
        outstanding.signal();
        receiver.wait();
        throw;
    }
    done = true;
    outstanding.signal();
    receiver.get();
}

shard_result run_shard(const settings& s) {
    shard_result result;
    std::unique_ptr<mode> m = make_mode(s.mode_name, s.protocol);
    std::vector<future<void>> fibers;
    unsigned shards = shard_count();
    for (unsigned id = this_shard_id(); id < s.connections; id += shards) {
        fibers.push_back(spawn({.name = "loadgen connection"}, [&s, &m, &result, id] {
            try {
                connection conn = connect(s.address, std::chrono::seconds(5));
                if (s.rate > 0) {
                    open_loop(s, *m, id, conn, result);
                } else {
                    closed_loop(s, *m, id, conn, result);
                }
            } catch (const std::exception& e) {
                report_error(result, id, e.what());
            }
        }));
    }
    for (auto& f : fibers) f.get();
    return result;
}

}  // namespace

int main(int argc, char** argv) {
    app loadgen("loadgen", "load generator: many connections, checked replies, one summary line");
    loadgen.add_options()("mode", po::value<std::string>()->default_value("echo"),
                          "protocol: echo, memcache, resp")(
        "address", po::value<std::string>()->default_value("127.0.0.1"), "server IP address")(
        "port", po::value<std::uint16_t>()->default_value(7000), "server TCP port")(
        "connections", po::value<unsigned>()->default_value(64),
        "connections in total (spread over the shards)")(
        "pipeline", po::value<unsigned>()->default_value(1),
        "requests in flight per connection (the cap, with --rate)")(
        "size", po::value<std::string>()->default_value("64"),
        "payload bytes per request (e.g. 64, 16K)")(
        "duration", po::value<double>()->default_value(5), "measured seconds")(
        "warmup", po::value<double>()->default_value(1), "seconds before measuring")(
        "rate", po::value<double>()->default_value(0),
        "offered requests/s in total (open loop); 0: closed loop")(
        "keys", po::value<std::uint64_t>()->default_value(100000), "kv modes: key space")(
        "ratio", po::value<std::string>()->default_value("1:9"), "kv modes: SET:GET request mix")(
        "key-pattern", po::value<std::string>()->default_value("uniform"),
        "kv modes: uniform, or zipf:S (rank k drawn with probability ~ 1/k^S, S > 0)")(
        "json", po::bool_switch(), "print the summary as one JSON object");
    return loadgen.run(argc, argv, [&] {
        const auto& o = loadgen.options();
        settings s;
        s.address =
            socket_address::inet(o["address"].as<std::string>(), o["port"].as<std::uint16_t>());
        s.mode_name = o["mode"].as<std::string>();
        s.protocol.size = parse_size(o["size"].as<std::string>());
        s.protocol.keys = o["keys"].as<std::uint64_t>();
        if (s.protocol.keys == 0) throw config_error("--keys must be at least 1");
        {
            const auto ratio = o["ratio"].as<std::string>();
            unsigned sets = 0, gets = 0;
            char colon = 0;
            int used = 0;
            if (std::sscanf(ratio.c_str(), "%u%c%u%n", &sets, &colon, &gets, &used) != 3 ||
                colon != ':' || static_cast<std::size_t>(used) != ratio.size() ||
                sets + gets == 0) {
                throw config_error("bad --ratio '" + ratio + "': expected SETS:GETS, e.g. 1:9");
            }
            s.protocol.set_ratio = sets;
            s.protocol.get_ratio = gets;
        }
        {
            const auto pattern = o["key-pattern"].as<std::string>();
            if (pattern.starts_with("zipf:")) {
                const std::string exponent = pattern.substr(5);
                char* end = nullptr;
                s.protocol.zipf_exponent = std::strtod(exponent.c_str(), &end);
                if (exponent.empty() || *end != '\0' || !(s.protocol.zipf_exponent > 0) ||
                    s.protocol.zipf_exponent > 100)
                    throw config_error("bad --key-pattern '" + pattern +
                                       "': zipf:S needs 0 < S <= 100, e.g. zipf:0.99");
            } else if (pattern != "uniform") {
                throw config_error("bad --key-pattern '" + pattern +
                                   "': expected uniform or zipf:S");
            }
        }
        s.connections = o["connections"].as<unsigned>();
        s.pipeline = o["pipeline"].as<unsigned>();
        s.rate = o["rate"].as<double>();
        double duration = o["duration"].as<double>();
        double warmup = o["warmup"].as<double>();
        if (s.protocol.size == 0 || s.protocol.size > 16 * 1024 * 1024)
            throw config_error("--size must be 1 byte to 16M");
        if (s.connections == 0 || s.connections > 100'000)
            throw config_error("--connections must be 1 to 100000");
        if (s.pipeline == 0 || s.pipeline > 100'000)
            throw config_error("--pipeline must be 1 to 100000");
        if (!(duration > 0) || duration > 86400)
            throw config_error("--duration must be > 0 seconds");
        if (!(warmup >= 0) || warmup > 86400) throw config_error("--warmup must be >= 0 seconds");
        if (!(s.rate >= 0)) throw config_error("--rate must be >= 0");
        make_mode(s.mode_name, s.protocol);  // an unknown mode fails here, once
        auto seconds = [](double d) {
            return std::chrono::duration_cast<percore::duration>(std::chrono::duration<double>(d));
        };
        s.start = clock::now();
        s.measure_start = s.start + seconds(warmup);
        s.end = s.measure_start + seconds(duration);

        auto per_shard = invoke_on_all([&s] { return run_shard(s); });
        shard_result total;
        for (auto& r : per_shard) {
            total.latencies.merge(r.latencies);
            total.errors += r.errors;
            total.hits += r.hits;
            total.misses += r.misses;
        }
        auto us = [&](double q) {
            return static_cast<double>(total.latencies.quantile(q)) / 1000.0;
        };
        const char* format =
            o["json"].as<bool>()
                ? "{\"requests_per_s\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
                  "\"p999_us\": %.1f, \"errors\": %llu, \"hits\": %llu, \"misses\": %llu}\n"
                : "requests_per_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=%llu "
                  "hits=%llu misses=%llu\n";
        std::printf(format, static_cast<double>(total.latencies.total()) / duration, us(0.50),
                    us(0.99), us(0.999), static_cast<unsigned long long>(total.errors),
                    static_cast<unsigned long long>(total.hits),
                    static_cast<unsigned long long>(total.misses));
        std::fflush(stdout);
        return total.errors == 0 && total.latencies.total() > 0 ? 0 : 1;
    });
}

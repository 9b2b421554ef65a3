// The metrics endpoint: a real HTTP GET over TCP, its Prometheus text parsed
// here (and by promtool when it is installed), and the --stats table.
#include <unistd.h>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "percore/fiber.hpp"
#include "percore/metrics.hpp"
#include "percore/net.hpp"
#include "percore/scheduling.hpp"
#include "percore/smp.hpp"
#include "percore/timer.hpp"
#include "shards.hpp"

using namespace percore;
using namespace std::chrono_literals;

namespace {

struct http_response {
    int status = 0;
    std::map<std::string, std::string> headers;
    std::string body;
};

// One request over a fresh connection; the server closes after answering.
http_response http_request(std::uint16_t port, const std::string& request) {
    connection c = connect(socket_address::inet("127.0.0.1", port), 5s);
    c.write_all(request);
    std::string raw;
    char buffer[4096];
    for (;;) {
        std::size_t n = c.read(buffer, clock::now() + 5s);
        if (n == 0) break;
        raw.append(buffer, n);
    }
    http_response r;
    auto end_of_head = raw.find("\r\n\r\n");
    REQUIRE(end_of_head != std::string::npos);
    std::string head = raw.substr(0, end_of_head);
    r.body = raw.substr(end_of_head + 4);
    std::smatch m;
    REQUIRE(std::regex_search(head, m, std::regex("^HTTP/1\\.1 (\\d{3}) ")));
    r.status = std::stoi(m[1]);
    std::regex header_line("\r\n([A-Za-z-]+): ([^\r]*)");
    for (auto it = std::sregex_iterator(head.begin(), head.end(), header_line);
         it != std::sregex_iterator(); ++it) {
        r.headers[(*it)[1]] = (*it)[2];
    }
    return r;
}

struct sample {
    std::string name;
    std::map<std::string, std::string> labels;
    double value = 0;
};

// A strict reader of the Prometheus text format (0.0.4): every line is a
// HELP or TYPE comment or a sample `name{label="value",...} number`; a
// sample's family must have been TYPEd before it. Fails the test otherwise.
std::vector<sample> parse_prometheus(const std::string& text) {
    static const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
    static const std::regex label_re(
        "([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\\\\n]|\\\\[\\\\\"n])*)\"(,|$)");
    std::map<std::string, std::string> types;
    std::vector<sample> samples;
    std::size_t pos = 0;
    REQUIRE(!text.empty());
    REQUIRE(text.back() == '\n');
    while (pos < text.size()) {
        auto eol = text.find('\n', pos);
        std::string line = text.substr(pos, eol - pos);
        pos = eol + 1;
        INFO("line: " << line);
        if (line.rfind("# HELP ", 0) == 0) continue;
        if (line.rfind("# TYPE ", 0) == 0) {
            std::smatch m;
            REQUIRE(std::regex_match(line, m,
                                     std::regex("# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) "
                                                "(counter|gauge|histogram|summary|untyped)")));
            REQUIRE(types.count(m[1]) == 0);
            types[m[1]] = m[2];
            continue;
        }
        REQUIRE(line.front() != '#');
        sample s;
        auto brace = line.find('{');
        auto space = line.rfind(' ');
        REQUIRE(space != std::string::npos);
        s.name = line.substr(0, brace == std::string::npos ? space : brace);
        REQUIRE(std::regex_match(s.name, name_re));
        if (brace != std::string::npos) {
            auto close = line.rfind('}');
            REQUIRE(close != std::string::npos);
            REQUIRE(close + 1 == space);
            std::string labels = line.substr(brace + 1, close - brace - 1);
            std::string rest = labels;
            std::smatch m;
            while (!rest.empty()) {
                REQUIRE(
                    std::regex_search(rest, m, label_re, std::regex_constants::match_continuous));
                s.labels[m[1]] = m[2];
                rest = m.suffix();
            }
        }
        std::string value = line.substr(space + 1);
        char* end = nullptr;
        s.value = std::strtod(value.c_str(), &end);
        REQUIRE((end == value.c_str() + value.size() || value == "+Inf"));
        std::string family = s.name;
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
            std::string sfx = suffix;
            if (!types.count(family) && family.size() > sfx.size() &&
                family.compare(family.size() - sfx.size(), sfx.size(), sfx) == 0) {
                family = family.substr(0, family.size() - sfx.size());
            }
        }
        REQUIRE(types.count(family) == 1);
        samples.push_back(std::move(s));
    }
    return samples;
}

const sample* find(const std::vector<sample>& samples, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
    for (auto& s : samples) {
        if (s.name != name) continue;
        bool match = true;
        for (auto& [k, v] : labels) match = match && s.labels.count(k) && s.labels.at(k) == v;
        if (match) return &s;
    }
    return nullptr;
}

}  // namespace

TEST_CASE("the metrics endpoint answers GET /metrics with Prometheus text") {
    http_response ok, missing, wrong_method, garbage;
    std::string table;
    testing::run_in_shards(2, [&] {
        auto& q = create_task_queue(250, latency::matters(5ms), "odd \"name\"\\x");
        for (int i = 0; i < 50; ++i) spawn_into(q, [] { yield(); }).get();
        submit_to(1, [] {
            auto& other = create_task_queue(100, latency::not_important(), "background");
            spawn_into(other, [] { sleep_for(1ms); }).get();
            return 0;
        }).get();
        metrics_server server("127.0.0.1:0");
        REQUIRE(server.port() != 0);
        ok = http_request(server.port(),
                          "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
        missing = http_request(server.port(), "GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n");
        wrong_method =
            http_request(server.port(), "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        garbage = http_request(server.port(), "hello\r\n\r\n");
        server.stop();
        table = format_stats_table(snapshot_all_shards());
    });

    CHECK(missing.status == 404);
    CHECK(wrong_method.status == 405);
    CHECK(garbage.status == 400);
    REQUIRE(ok.status == 200);
    CHECK(ok.headers["Content-Type"].rfind("text/plain; version=0.0.4", 0) == 0);
    CHECK(std::stoul(ok.headers["Content-Length"]) == ok.body.size());

    auto samples = parse_prometheus(ok.body);
    for (const char* shard : {"0", "1"}) {
        auto* tasks = find(samples, "percore_tasks_run_total", {{"shard", shard}});
        REQUIRE(tasks);
        CHECK(tasks->value > 0);
        CHECK(find(samples, "percore_queue_runtime_seconds_total",
                   {{"shard", shard}, {"queue", "default"}}));
        CHECK(find(samples, "percore_io_submitted_total", {{"shard", shard}}));
        CHECK(find(samples, "percore_smp_messages_received_total", {{"shard", shard}}));
        CHECK(find(samples, "percore_stalls_total", {{"shard", shard}}));
    }
    // Label values are escaped: odd "name"\x.
    auto* odd = find(samples, "percore_queue_tasks_run_total",
                     {{"shard", "0"}, {"queue", "odd \\\"name\\\"\\\\x"}});
    REQUIRE(odd);
    CHECK(odd->value >= 50);
    auto* shares = find(samples, "percore_queue_shares", {{"shard", "1"}, {"queue", "background"}});
    REQUIRE(shares);
    CHECK(shares->value == 100);
    // The delay histogram: cumulative buckets ending in +Inf == _count.
    double last = 0;
    std::size_t buckets = 0;
    for (auto& s : samples) {
        if (s.name != "percore_queue_delay_seconds_bucket" || s.labels["shard"] != "0" ||
            s.labels["queue"] != "odd \\\"name\\\"\\\\x") {
            continue;
        }
        CHECK(s.value >= last);
        last = s.value;
        ++buckets;
    }
    CHECK(buckets > 10);
    auto* count = find(samples, "percore_queue_delay_seconds_count",
                       {{"shard", "0"}, {"queue", "odd \\\"name\\\"\\\\x"}});
    REQUIRE(count);
    CHECK(count->value == last);
    CHECK(count->value >= 50);  // every fiber of a latency queue is timed

    // promtool (Debian package prometheus) agrees, when installed.
    if (access("/usr/bin/promtool", X_OK) == 0) {
        char path[] = "/tmp/percore-metrics-XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, ok.body.data(), ok.body.size()) == static_cast<ssize_t>(ok.body.size()));
        close(fd);
        std::string command = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
        FILE* p = popen(command.c_str(), "r");
        REQUIRE(p);
        std::string output;
        char line[512];
        while (fgets(line, sizeof(line), p)) output += line;
        int status = pclose(p);
        unlink(path);
        INFO("promtool: " << output);
        CHECK(status == 0);
        CHECK(output.empty());
    } else {
        WARN("promtool not installed: checked with the test's own parser only");
    }

    INFO(table);
    CHECK(table.find("background") != std::string::npos);
    CHECK(table.find("delay_p99") != std::string::npos);
}

TEST_CASE("an app's shard_gauge is exported per shard and keeps its last value") {
    std::string text, table_after;
    testing::run_in_shards(2, [&] {
        double level = 3;
        shard_gauge here("app_test_level", "A test gauge.", [&level] { return level; });
        auto there = submit_to(1, [] {
                         return std::make_shared<shard_gauge>("app_test_level", "A test gauge.",
                                                              [] { return 7.0; });
                     }).get();
        text = format_prometheus(snapshot_all_shards());
        level = 5;
        submit_to(1, [there = std::move(there)]() mutable { there.reset(); }).get();
        {
            shard_gauge replaced("app_test_level", "A test gauge.", [] { return 9.0; });
        }
        // Shard 0's frozen at 9 (the last registration), shard 1's at 7.
        table_after = format_stats_table(snapshot_all_shards());
    });
    auto samples = parse_prometheus(text);
    auto* zero = find(samples, "app_test_level", {{"shard", "0"}});
    auto* one = find(samples, "app_test_level", {{"shard", "1"}});
    REQUIRE(zero);
    REQUIRE(one);
    CHECK(zero->value == 3);
    CHECK(one->value == 7);
    CHECK(text.find("# TYPE app_test_level gauge") != std::string::npos);
    CHECK(std::regex_search(table_after, std::regex("0 +app_test_level +9\\n")));
    CHECK(std::regex_search(table_after, std::regex("1 +app_test_level +7\\n")));
}

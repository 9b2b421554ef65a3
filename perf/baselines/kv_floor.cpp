// Baseline: the floor of a key-value server's CPU per request on this
// machine. A plain single-threaded epoll loop, no framework and no store: it
// parses memcache or RESP SET/GET requests as perf/loadgen sends them and
// answers as if nothing were ever stored (STORED / END, +OK / null bulk).
// What it spends per request is the kernel's socket work plus a parse, the
// least any server pays for the same traffic; perf/compare-kv runs it next to
// kv, memcached and redis-server so CPU targets can be read against it.
// Usage: kv-floor memcache|resp PORT [ADDRESS].
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "plain_socket.hpp"

namespace {

constexpr std::size_t max_request = 1 << 20;  // larger: the connection is dropped

struct client {
    std::string input;     // bytes of a request not complete yet
    std::string pending;   // reply bytes the kernel did not take yet
    bool blocked = false;  // waiting for EPOLLOUT, not reading
};

// A decimal at the start of `s` (as in "$5" or "set k 0 0 100"), or nothing.
std::optional<std::size_t> number(std::string_view s) {
    std::size_t value = 0, i = 0;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) value = value * 10 + (s[i] - '0');
    if (i == 0) return std::nullopt;
    return value;
}

// The parse of one request: its length in bytes (0 while incomplete) and the
// reply; `bad` for bytes that are neither protocol.
struct parsed {
    std::size_t length = 0;
    std::string_view reply;
    bool bad = false;
};

parsed parse_resp(std::string_view in) {
    std::size_t end = in.find("\r\n");
    if (end == std::string_view::npos) return {};
    auto args = in[0] == '*' ? number(in.substr(1)) : std::nullopt;
    if (!args || *args == 0) return {.bad = true};
    std::size_t pos = end + 2;
    char command = 0;
    for (std::size_t i = 0; i < *args; ++i) {
        std::size_t line = in.find("\r\n", pos);
        if (line == std::string_view::npos) return {};
        auto length = in[pos] == '$' ? number(in.substr(pos + 1)) : std::nullopt;
        if (!length) return {.bad = true};
        std::size_t start = line + 2;
        if (start + *length + 2 > in.size()) return {};
        if (i == 0) command = *length > 0 ? in[start] : 0;
        pos = start + *length + 2;
    }
    if (command == 'S' || command == 's') return {pos, "+OK\r\n"};
    return {pos, "$-1\r\n"};
}

parsed parse_memcache(std::string_view in) {
    std::size_t end = in.find("\r\n");
    if (end == std::string_view::npos) return {};
    std::string_view line = in.substr(0, end);
    if (line.starts_with("get ")) return {end + 2, "END\r\n"};
    if (!line.starts_with("set ")) return {.bad = true};
    auto bytes = number(line.substr(line.rfind(' ') + 1));
    if (!bytes) return {.bad = true};
    std::size_t total = end + 2 + *bytes + 2;
    if (total > in.size()) return {};
    return {total, "STORED\r\n"};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3 || (std::strcmp(argv[1], "memcache") != 0 && std::strcmp(argv[1], "resp") != 0)) {
        std::fprintf(stderr, "usage: kv-floor memcache|resp PORT [ADDRESS]\n");
        return 2;
    }
    auto parse = std::strcmp(argv[1], "resp") == 0 ? parse_resp : parse_memcache;
    int port = std::atoi(argv[2]);
    const char* host = argc > 3 ? argv[3] : "127.0.0.1";
    int lfd = baseline::listen_tcp("kv-floor", host, port, 4096);
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    baseline::watch(ep, EPOLL_CTL_ADD, lfd, EPOLLIN);
    std::fprintf(stderr, "listening on %s:%d (%s)\n", host, port, argv[1]);

    std::unordered_map<int, client> clients;
    static char buffer[64 * 1024];
    auto drop = [&](int fd) {
        baseline::drop(ep, fd);
        clients.erase(fd);
    };
    // Sends what is pending; false when the connection is gone.
    auto flush = [&](int fd, client& cl) {
        ssize_t w = ::send(fd, cl.pending.data(), cl.pending.size(), MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) return false;
        if (w > 0) cl.pending.erase(0, static_cast<std::size_t>(w));
        // Stop reading while a reply waits for room, as a real server would.
        if (cl.blocked != !cl.pending.empty()) {
            cl.blocked = !cl.pending.empty();
            baseline::watch(ep, EPOLL_CTL_MOD, fd, cl.blocked ? EPOLLOUT : EPOLLIN);
        }
        return true;
    };
    baseline::serve(
        "kv-floor", lfd, ep, [&](int fd) { clients[fd]; },
        [&](int fd) {
            if (!flush(fd, clients[fd])) drop(fd);
        },
        [&](int fd) {
            ssize_t r = baseline::receive(fd, buffer, sizeof(buffer));
            if (r < 0) drop(fd);
            if (r <= 0) return;
            client& cl = clients[fd];
            cl.input.append(buffer, static_cast<std::size_t>(r));
            std::string_view in = cl.input;
            bool bad = false;
            for (;;) {
                parsed p = parse(in);
                if (p.bad) bad = true;
                if (p.length == 0) break;
                cl.pending += p.reply;
                in.remove_prefix(p.length);
            }
            if (bad || in.size() > max_request) return drop(fd);
            cl.input.erase(0, cl.input.size() - in.size());
            if (!cl.pending.empty() && !flush(fd, cl)) drop(fd);
        });
}

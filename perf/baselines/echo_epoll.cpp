// Baseline: a plain single-threaded epoll echo server, no framework.
// Usage: echo-epoll PORT [ADDRESS]. Level-triggered; one recv per readiness
// event, the echo sent at once; a partial send parks the rest until EPOLLOUT.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "plain_socket.hpp"

namespace {

struct client {
    std::string pending;  // bytes the kernel did not take yet
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: echo-epoll PORT [ADDRESS]\n");
        return 2;
    }
    int port = std::atoi(argv[1]);
    const char* host = argc > 2 ? argv[2] : "127.0.0.1";
    int lfd = baseline::listen_tcp("echo-epoll", host, port, 1024);
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    baseline::watch(ep, EPOLL_CTL_ADD, lfd, EPOLLIN);
    std::fprintf(stderr, "listening on %s:%d\n", host, port);

    std::unordered_map<int, client> clients;
    static char buffer[16 * 1024];
    auto drop = [&](int fd) {
        baseline::drop(ep, fd);
        clients.erase(fd);
    };
    baseline::serve(
        "echo-epoll", lfd, ep, [&](int fd) { clients[fd]; },
        [&](int fd) {
            client& cl = clients[fd];
            ssize_t w = ::send(fd, cl.pending.data(), cl.pending.size(), MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) return drop(fd);
            if (w > 0) cl.pending.erase(0, static_cast<std::size_t>(w));
            if (cl.pending.empty()) baseline::watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN);
        },
        [&](int fd) {
            ssize_t r = baseline::receive(fd, buffer, sizeof(buffer));
            if (r < 0) drop(fd);
            if (r <= 0) return;
            ssize_t w = ::send(fd, buffer, static_cast<std::size_t>(r), MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) return drop(fd);
            if (w < r) {
                clients[fd].pending.assign(buffer + (w > 0 ? w : 0), buffer + r);
                // Stop reading until the echo is out.
                baseline::watch(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
            }
        });
}

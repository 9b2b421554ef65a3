// Baseline: a plain single-threaded epoll echo server, no framework.
// Usage: echo-epoll PORT [ADDRESS]. Level-triggered; one recv per readiness
// event, the echo sent at once; a partial send parks the rest until EPOLLOUT.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

namespace {

struct client {
    std::string pending;  // bytes the kernel did not take yet
};

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "echo-epoll: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: echo-epoll PORT [ADDRESS]\n");
        return 2;
    }
    int port = std::atoi(argv[1]);
    const char* host = argc > 2 ? argv[2] : "127.0.0.1";
    int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("address");
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) die("bind");
    if (::listen(lfd, 1024) != 0) die("listen");
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    std::fprintf(stderr, "listening on %s:%d\n", host, port);

    std::unordered_map<int, client> clients;
    static char buffer[16 * 1024];
    epoll_event events[256];
    auto drop = [&](int fd) {
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        clients.erase(fd);
    };
    for (;;) {
        int n = ::epoll_wait(ep, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    epoll_event cev{};
                    cev.events = EPOLLIN;
                    cev.data.fd = c;
                    ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                    clients[c];
                }
                continue;
            }
            client& cl = clients[fd];
            if (events[i].events & EPOLLOUT) {
                ssize_t w = ::send(fd, cl.pending.data(), cl.pending.size(), MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) {
                    drop(fd);
                    continue;
                }
                if (w > 0) cl.pending.erase(0, static_cast<std::size_t>(w));
                if (cl.pending.empty()) {
                    epoll_event cev{};
                    cev.events = EPOLLIN;
                    cev.data.fd = fd;
                    ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                }
                continue;
            }
            ssize_t r = ::recv(fd, buffer, sizeof(buffer), 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                drop(fd);
                continue;
            }
            ssize_t w = ::send(fd, buffer, static_cast<std::size_t>(r), MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) {
                drop(fd);
                continue;
            }
            if (w < r) {
                cl.pending.assign(buffer + (w > 0 ? w : 0), buffer + r);
                epoll_event cev{};
                cev.events = EPOLLOUT;  // stop reading until the echo is out
                cev.data.fd = fd;
                ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
            }
        }
    }
}

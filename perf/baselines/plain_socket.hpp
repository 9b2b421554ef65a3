// What the plain epoll baselines share: a non-blocking TCP listener, epoll
// registration, and accepting every pending connection. No framework on
// purpose: these servers are the yardsticks.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace baseline {

// Prints "PROGRAM: WHAT: strerror(errno)" and exits 1.
[[noreturn]] inline void die(const char* program, const char* what) {
    std::fprintf(stderr, "%s: %s: %s\n", program, what, std::strerror(errno));
    std::exit(1);
}

// A non-blocking listening TCP socket on host:port (SO_REUSEADDR).
inline int listen_tcp(const char* program, const char* host, int port, int backlog) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die(program, "socket");
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        errno = EINVAL;
        die(program, "address");
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) die(program, "bind");
    if (::listen(fd, backlog) != 0) die(program, "listen");
    return fd;
}

// Adds or modifies `fd` in the epoll set with `events`, the fd as data.
inline void watch(int epoll_fd, int op, int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd, op, fd, &ev);
}

// Accepts every pending connection (non-blocking, TCP_NODELAY), watches it
// for EPOLLIN and hands its fd to `added`.
template <typename Added>
void accept_pending(int listen_fd, int epoll_fd, Added&& added) {
    for (;;) {
        int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) return;
        int one = 1;
        ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        watch(epoll_fd, EPOLL_CTL_ADD, c, EPOLLIN);
        added(c);
    }
}

// Removes a connection from the epoll set and closes it.
inline void drop(int epoll_fd, int fd) {
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
}

// What a readiness event found: bytes read (> 0), 0 for nothing yet
// (EAGAIN), -1 when the connection is over (EOF or an error).
inline ssize_t receive(int fd, char* buffer, std::size_t size) {
    ssize_t r = ::recv(fd, buffer, size, 0);
    if (r > 0) return r;
    return r < 0 && errno == EAGAIN ? 0 : -1;
}

// The event loop, level-triggered: new connections go to added(fd), EPOLLOUT
// to writable(fd), EPOLLIN to readable(fd). Never returns.
template <typename Added, typename Writable, typename Readable>
[[noreturn]] void serve(const char* program, int listen_fd, int epoll_fd, Added&& added,
                        Writable&& writable, Readable&& readable) {
    epoll_event events[256];
    for (;;) {
        int n = ::epoll_wait(epoll_fd, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die(program, "epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == listen_fd) {
                accept_pending(listen_fd, epoll_fd, added);
            } else if (events[i].events & EPOLLOUT) {
                writable(fd);
            } else {
                readable(fd);
            }
        }
    }
}

}  // namespace baseline

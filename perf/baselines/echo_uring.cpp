// Baseline: a plain single-threaded liburing echo server, no framework: every
// recv and send goes through the ring (SINGLE_ISSUER | DEFER_TASKRUN, as the
// framework's shards), multishot accept. Usage: echo-uring PORT [ADDRESS].
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace {

constexpr std::size_t buffer_size = 16 * 1024;
enum kind : std::uint8_t { accept_op, recv_op, send_op };

struct conn {
    int fd;
    std::size_t len = 0;   // bytes to echo
    std::size_t sent = 0;  // of them already sent
    char buffer[buffer_size];
};

io_uring ring;
int listen_fd;

// user_data: pointer | kind in the low bits (conn is 8-aligned).
void* tag(conn* c, kind k) {
    return reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(c) | k);
}

io_uring_sqe* sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    if (!s) {
        io_uring_submit(&ring);
        s = io_uring_get_sqe(&ring);
    }
    return s;
}

void post_accept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data(s, tag(nullptr, accept_op));
}
void post_recv(conn* c) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv(s, c->fd, c->buffer, buffer_size, 0);
    io_uring_sqe_set_data(s, tag(c, recv_op));
}
void post_send(conn* c) {
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, c->fd, c->buffer + c->sent, c->len - c->sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data(s, tag(c, send_op));
}

[[noreturn]] void die(const char* what, int err) {
    std::fprintf(stderr, "echo-uring: %s: %s\n", what, std::strerror(err));
    std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: echo-uring PORT [ADDRESS]\n");
        return 2;
    }
    int port = std::atoi(argv[1]);
    const char* host = argc > 2 ? argv[2] : "127.0.0.1";
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (int r = io_uring_queue_init_params(4096, &ring, &params); r < 0)
        die("io_uring_queue_init", -r);
    listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("address", EINVAL);
    if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
        die("bind", errno);
    if (::listen(listen_fd, 1024) != 0) die("listen", errno);
    post_accept();
    std::fprintf(stderr, "listening on %s:%d\n", host, port);

    for (;;) {
        io_uring_cqe* cqe;
        int r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR) die("io_uring_submit_and_wait", -r);
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            ++seen;
            auto data = reinterpret_cast<std::uintptr_t>(io_uring_cqe_get_data(cqe));
            auto k = static_cast<kind>(data & 7);
            conn* c = reinterpret_cast<conn*>(data & ~std::uintptr_t{7});
            int res = cqe->res;
            switch (k) {
                case accept_op:
                    if (res >= 0) {
                        ::setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                        auto* nc = new conn{res};
                        post_recv(nc);
                    }
                    if (!(cqe->flags & IORING_CQE_F_MORE)) post_accept();
                    break;
                case recv_op:
                    if (res <= 0) {
                        ::close(c->fd);
                        delete c;
                        break;
                    }
                    c->len = static_cast<std::size_t>(res);
                    c->sent = 0;
                    post_send(c);
                    break;
                case send_op:
                    if (res < 0) {
                        ::close(c->fd);
                        delete c;
                        break;
                    }
                    c->sent += static_cast<std::size_t>(res);
                    if (c->sent < c->len) {
                        post_send(c);
                    } else {
                        post_recv(c);
                    }
                    break;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}

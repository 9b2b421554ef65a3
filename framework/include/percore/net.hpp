// TCP and Unix-domain sockets over io_uring: listeners (one per shard with
// SO_REUSEPORT, multishot accept), connections (read, write_all, shutdown,
// close) and connect with a timeout. Buffered streams are in stream.hpp.
//
// Errors: EOF is a read of 0 bytes; a reset peer is io_error(ECONNRESET); a
// passed deadline is timeout_error; an operation cut short by close() from
// another fiber is io_error(ECANCELED); one cut short by the shard stopping is
// shutdown_error.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "percore/clock.hpp"
#include "percore/socket_address.hpp"
#include "percore/timer.hpp"

namespace percore {

class completion_handler;

// How sockets trade plain non-blocking syscalls against ring submissions.
// Seastar and Glommio try the syscall first when the socket is likely ready;
// perf/compare-echo measures each choice. Process-wide; set it before any
// shard starts using sockets (the echo app exposes it as options).
struct net_tuning {
    enum class recv_policy : std::uint8_t {
        // A multishot poll stays armed on the socket (as an epoll registration
        // does) and recv(MSG_DONTWAIT) runs once it reports data: no SQE and
        // no poll arming per read. Measured 5-9 % less server CPU per message
        // than `ring` in perf/compare-echo.
        readiness,
        ring,        // every recv goes through the ring
        after_full,  // try recv(MSG_DONTWAIT) first when the previous read filled the buffer
        always,      // always try recv(MSG_DONTWAIT) first
    };
    recv_policy recv = recv_policy::readiness;
    // Try send(MSG_DONTWAIT) first; the ring only gets what would block.
    bool send_first = true;
    // Ring recvs that are expected to wait skip the kernel's first attempt
    // (IORING_RECVSEND_POLL_FIRST) and arm the poll at once.
    bool poll_first = true;
};
net_tuning& default_net_tuning() noexcept;

// A connected socket owned by one shard. Move-only; closes on destruction.
// One fiber may read while another writes; two concurrent readers (or two
// writers) interleave unpredictably.
class connection {
  public:
    connection() = default;
    // Adopts a connected socket (TCP_NODELAY is the caller's business).
    explicit connection(int fd) noexcept : fd_(fd) {}
    connection(connection&& other) noexcept;
    connection& operator=(connection&& other) noexcept;
    ~connection();

    bool is_open() const noexcept { return fd_ >= 0; }
    int fd() const noexcept { return fd_; }

    // Reads what is available, up to buffer.size() bytes, suspending until
    // there is something; 0 means the peer closed its side (EOF). Throws
    // timeout_error at the deadline, io_error on a reset or other failure.
    std::size_t read(std::span<char> buffer, std::optional<time_point> deadline = std::nullopt);
    // Writes all of data (finishing partial sends); io_error if the peer is gone,
    // timeout_error if the whole write is not done by `deadline` (a peer that
    // stopped reading: part of data may have been sent).
    void write_all(std::string_view data, std::optional<time_point> deadline = std::nullopt);
    // Writes all the pieces in order (one sendmsg when they fit).
    void write_all(std::span<const iovec> pieces);

    // Shuts down one or both directions (SHUT_WR sends FIN after queued data).
    void shutdown(int how = SHUT_WR);
    // Closes the socket. Reads or writes in flight on other fibers are
    // cancelled and see io_error(ECANCELED); close() waits until they let go.
    void close() noexcept;
    // Gives the socket up without closing it and returns its descriptor (-1
    // if closed): the shard's armed poll is cancelled first, as close() does,
    // so another shard may adopt it with connection(fd) (kv moves a client to
    // the shard that owns its keys). Call it from the fiber that reads and
    // writes, between operations: a read or write in flight is cancelled.
    int release() noexcept;

    socket_address peer_address() const;
    socket_address local_address() const;
    // TCP_NODELAY (on by default for accepted and connected TCP sockets).
    void set_nodelay(bool on);

  private:
    template <typename Prepare>
    int ring_op(Prepare&& prepare, std::optional<time_point> deadline);
    template <typename Prepare>
    int read_op(Prepare&& prepare, std::optional<time_point> deadline);
    class readiness;
    struct readiness_deleter {
        void operator()(
            readiness* r) const noexcept;  // in connection.cpp, where readiness is complete
    };
    std::size_t read_when_ready(std::span<char> buffer, std::optional<time_point> deadline);
    void wait_readable(std::optional<time_point> deadline);
    void arm_read_alarm(time_point deadline);
    // A ring operation ended: wakes close() when it was the last.
    void op_done() noexcept;
    void on_read_alarm();
    void finish_close() noexcept;
    // Cancels what the ring holds on fd_ and waits until it let go.
    void quiesce() noexcept;
    [[noreturn]] void throw_error(int error, const char* what) const;

    int fd_ = -1;
    unsigned inflight_ = 0;        // ring operations in flight on fd_
    bool closing_ = false;         // close() waits for inflight_ to drop to 0
    bool last_read_full_ = false;  // the last read filled its buffer: more may be queued
    void* closer_ = nullptr;       // the fiber waiting in close()
    // Read deadlines (an idle timeout on every read, in a server) do not
    // arm and cancel a timer per read: read_alarm_ stays armed at a deadline
    // no later than the current read's and, when it fires early, moves on to
    // it. Arming and cancelling in the shard's timer heap cost ~3 % of
    // kv's CPU at 1 000 connections (a sift writes into cold timers).
    timer read_alarm_;
    time_point read_deadline_{};
    completion_handler* read_waiting_ = nullptr;  // the read read_alarm_ guards
    bool read_expired_ = false;                   // read_alarm_ cancelled it
    // The multishot poll of recv_policy::readiness, armed by the first read.
    // On the heap: the kernel holds its address while the connection moves.
    std::unique_ptr<readiness, readiness_deleter> readiness_;
};

// Options of listen().
struct listen_options {
    int backlog = 1024;
    // SO_REUSEPORT: every shard listens on the same port and the kernel
    // spreads incoming connections over them.
    bool reuse_port = true;
    // Accepted sockets buffered per listener; multishot accept pauses when
    // it is full (the kernel's backlog holds the rest).
    std::size_t accept_queue = 256;
    // Use IORING_ACCEPT_MULTISHOT; falls back to one accept per call if the
    // kernel refuses it.
    bool multishot = true;
    // TCP_NODELAY on accepted TCP connections.
    bool nodelay = true;
};

// A listening socket on the current shard.
class listener {
  public:
    listener() = default;
    listener(listener&&) noexcept;
    listener& operator=(listener&&) noexcept;
    ~listener();

    // The next accepted connection. Throws io_error(ECANCELED) once close()
    // ran, shutdown_error when the shard stops, timeout_error at the deadline.
    connection accept(std::optional<time_point> deadline = std::nullopt);
    // The accepted connection with its peer's address.
    // Stops listening: wakes every fiber waiting in accept() with an error and
    // waits (briefly) for the kernel to release its accept requests.
    void close() noexcept;

    bool is_open() const noexcept;
    // The bound address (with the real port when listening on port 0).
    socket_address local_address() const;
    // Whether multishot accept is in use (false after a fallback).
    bool multishot() const noexcept;

    struct state;

  private:
    friend listener listen(const socket_address&, const listen_options&);
    explicit listener(std::shared_ptr<state> s) noexcept : state_(std::move(s)) {}
    std::shared_ptr<state> state_;
};

// Binds and listens on `address` on the current shard. A Unix socket path
// that exists as a socket is replaced. Throws io_error naming the address.
listener listen(const socket_address& address, const listen_options& options = {});

// Connects to `address`, giving up with timeout_error after `timeout`.
connection connect(const socket_address& address, std::optional<duration> timeout = std::nullopt);

}  // namespace percore

#!/usr/bin/env python3
"""Overload and hostile clients against `kv --smp 2`, over raw sockets.

Each test starts its own kv (both protocols, fresh ports, stderr kept in a
file so the log lines can be checked) and plays a client that misbehaves:
too many connections, never reading replies, a byte a second, going away
mid-request or mid-reply or with a reset, filling memory past --max-memory,
a request that makes its command fail. Nothing here asserts on timing: waits
are loops with a generous bound, the assertions are on what the server sent,
what it logged, its descriptors (/proc/PID/fd) and its RSS.

usage: kv_hostile_test.py PATH/TO/kv [unittest args]
  KV_HOSTILE=fast  skips the long tests (they form meson's `slow` suite:
                   kv_hostile_slow runs them with KV_HOSTILE=slow).
"""
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py
from testlib import free_port

KV = None
WAIT = 20.0  # seconds: generous bound for anything to happen (not a timing assertion)
MODE = os.environ.get("KV_HOSTILE", "all")  # fast, slow or all
# Set by meson in a -Db_sanitize tree (scripts/test --sanitize): ASan changes
# what memory looks like from outside (RLIMIT_AS, RSS), not what kv does.
SANITIZED = os.environ.get("PERCORE_SANITIZED") == "1"
MB = 1024 * 1024


def wait_until(predicate, what, timeout=WAIT):
    return testlib.wait_until(predicate, what, timeout)


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise unittest.SkipTest(
            "this test needs %d file descriptors but the hard RLIMIT_NOFILE is %d "
            "(raise it: ulimit -Hn %d as root, or LimitNOFILE= in the unit)" % (needed, hard, needed))
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class Kv(testlib.Server):
    """A kv server with both protocols; stderr goes to a temporary file.
    Stop it with stop_ok(): a crash, or in the sanitized build a leak or
    undefined behaviour found, gives a status other than 0."""

    def __init__(self, *extra, preexec=None):
        self.rport, self.mport = free_port(), free_port()
        argv = [KV, "--smp", "2", "--address", "127.0.0.1", "--redis-port", str(self.rport),
                "--memcache-port", str(self.mport)] + list(extra)
        super().__init__(argv, ports=[self.rport, self.mport], timeout=WAIT, preexec_fn=preexec)
        try:
            wait_until(self._probes_ended, "the probe connections to end")
        except BaseException:
            self.kill()
            raise

    def _probes_ended(self):
        """The probes above count as connections until kv sees them close:
        with a low --max-connections, kv may refuse the one asking."""
        try:
            return self.connections() == 0
        except AssertionError as e:
            if "too many open connections" in str(e):
                return False
            raise

    def connections(self):
        """Open connections (both protocols, all shards) other than the asking one."""
        with socket.create_connection(("127.0.0.1", self.mport), timeout=WAIT) as s:
            s.sendall(b"stats\r\n")
            data = recv_until(s, b"END\r\n")
        for line in data.split(b"\r\n"):
            if line.startswith(b"STAT curr_connections "):
                return int(line.split()[2]) - 1
        raise AssertionError("no curr_connections in stats")

    def pid(self):
        return self.proc.pid

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))


def recv_until(sock, end, limit=512 * MB):
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise AssertionError("EOF before %r; got %r" % (end, data[-200:]))
        data += chunk
        if len(data) > limit:
            raise AssertionError("more than %d bytes without %r" % (limit, end))
    return data


def read_to_eof(sock, limit=1 << 30):
    """Everything until the server closes (bounded); a reset counts as the end."""
    sock.settimeout(WAIT)
    data = bytearray()
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
            if len(data) > limit:
                raise AssertionError("the server kept sending past %d bytes" % limit)
    except ConnectionResetError:
        pass
    return bytes(data)


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def command(port, payload, end):
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(payload)
        return recv_until(s, end)


def redis_set(kv, key, value):
    assert command(kv.rport, resp("SET", key, value), b"\r\n") == b"+OK\r\n"


def memcache_set(kv, key, value):
    reply = command(kv.mport, b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value), b"\r\n")
    assert reply == b"STORED\r\n", reply


def disconnections_counted(kv):
    """output_buffer_disconnections as memcached `stats` and RESP INFO say (must agree)."""
    stats = command(kv.mport, b"stats\r\n", b"END\r\n")
    info = command(kv.rport, resp("INFO", "stats"), b"\r\n\r\n")
    mc = [int(l.split()[2]) for l in stats.split(b"\r\n")
          if l.startswith(b"STAT output_buffer_disconnections ")]
    rs = [int(l.split(b":")[1]) for l in info.split(b"\r\n")
          if l.startswith(b"client_output_buffer_limit_disconnections:")]
    assert len(mc) == 1 and len(rs) == 1, (stats, info)
    assert mc == rs, (mc, rs)
    return mc[0]


def linger_reset(sock):
    """Makes close() send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def still_serves(kv):
    assert command(kv.rport, resp("PING"), b"\r\n") == b"+PONG\r\n"
    assert command(kv.mport, b"version\r\n", b"\r\n").startswith(b"VERSION ")


# ---------------------------------------------------------------------------


@unittest.skipIf(MODE == "slow", "fast tests run in the kv suite")
class MaxConnections(unittest.TestCase):
    """--max-connections counts both protocols over all shards; beyond it a
    new connection gets one error line and is closed."""

    LIMIT = 40

    def test_rejects_beyond_limit_with_error_line(self):
        kv = Kv("--max-connections", str(self.LIMIT))
        try:
            held = []
            # Half on each protocol: kv spreads them over both shards (SO_REUSEPORT).
            for i in range(self.LIMIT):
                redis_side = i % 2 == 0
                s = socket.create_connection(
                    ("127.0.0.1", kv.rport if redis_side else kv.mport), timeout=WAIT)
                if redis_side:
                    s.sendall(resp("PING"))
                    self.assertEqual(recv_until(s, b"\r\n"), b"+PONG\r\n")
                else:
                    s.sendall(b"version\r\n")
                    self.assertTrue(recv_until(s, b"\r\n").startswith(b"VERSION "))
                held.append(s)
            for port, expected in ((kv.rport, b"-ERR max number of clients reached\r\n"),
                                   (kv.mport, b"SERVER_ERROR too many open connections\r\n")):
                with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as extra:
                    self.assertEqual(read_to_eof(extra), expected)
            # Room again once one leaves (kv notices the close asynchronously).
            held.pop().close()

            def admitted():
                with socket.create_connection(("127.0.0.1", kv.rport), timeout=WAIT) as s:
                    s.sendall(resp("PING"))
                    return read_line_or_eof(s) == b"+PONG\r\n"

            wait_until(admitted, "a connection to be admitted after one closed")
            for s in held:
                s.close()
            self.assertTrue(kv.alive())
        finally:
            kv.stop_ok()


    def test_refused_client_that_sent_requests_reads_the_error_line(self):
        # A client that writes before it reads (a pipelining client, a proxy)
        # must get the error line, not a reset caused by its unread input.
        kv = Kv("--max-connections", "2")
        try:
            held = []
            deadline = time.monotonic() + WAIT
            while len(held) < 2:
                # Kv's last stats probe may still count until the server sees
                # it close: a refusal here is that, so try again.
                s = socket.create_connection(("127.0.0.1", kv.rport), timeout=WAIT)
                s.sendall(resp("PING"))
                reply = recv_until(s, b"\r\n")
                if reply == b"+PONG\r\n":
                    held.append(s)
                    continue
                s.close()
                self.assertEqual(reply, b"-ERR max number of clients reached\r\n")
                self.assertLess(time.monotonic(), deadline, "the probe connection never ended")
                time.sleep(0.05)
            value = b"v" * (512 * 1024)  # more than one socket buffer: the server must read it
            for port, request, expected in (
                    (kv.rport, resp("SET", "k", value) * 2,
                     b"-ERR max number of clients reached\r\n"),
                    (kv.mport, b"set k 0 0 %d\r\n%s\r\nget k\r\n" % (len(value), value),
                     b"SERVER_ERROR too many open connections\r\n")):
                with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as extra:
                    extra.sendall(request)
                    self.assertEqual(read_to_eof(extra), expected)
            for s in held:
                s.close()
            self.assertTrue(kv.alive())
        finally:
            kv.stop_ok()


@unittest.skipIf(MODE == "slow", "fast tests run in the kv suite")
class DescriptorLimit(unittest.TestCase):
    """kv raises its soft RLIMIT_NOFILE to the hard limit, and refuses to
    start when --max-connections cannot fit under the hard limit."""

    def test_refuses_to_start_past_the_limit(self):
        port = free_port()

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

        r = subprocess.run([KV, "--smp", "2", "--redis-port", "0", "--memcache-port", str(port),
                            "--max-connections", "5000"],
                           preexec_fn=limit, capture_output=True, timeout=WAIT)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"--max-connections 5000 needs about 5064 file descriptors but "
                      b"RLIMIT_NOFILE is 1024", r.stderr)

    def test_soft_limit_raised_to_hard(self):
        raise_fd_limit(1000)  # this side's 600 sockets

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048))

        kv = Kv("--max-connections", "1000", preexec=limit)
        try:
            with open("/proc/%d/limits" % kv.pid()) as f:
                line = [l for l in f if l.startswith("Max open files")][0]
            self.assertEqual(line.split()[3:5], ["2048", "2048"], line)
            # 600 connections at once: more than the 256 it was started with.
            socks = [socket.create_connection(("127.0.0.1", kv.rport), timeout=WAIT)
                     for _ in range(600)]
            for s in socks:
                s.sendall(resp("PING"))
            for s in socks:
                self.assertEqual(recv_until(s, b"\r\n"), b"+PONG\r\n")
                s.close()
        finally:
            kv.stop_ok()


def read_line_or_eof(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@unittest.skipIf(MODE == "slow", "fast tests run in the kv suite")
class IdleTimeout(unittest.TestCase):
    """--idle-timeout closes silent clients, clients stuck in one request
    (slowloris) and clients that leave their replies unread; a client that
    keeps completing requests stays."""

    @classmethod
    def setUpClass(cls):
        cls.kv = Kv("--idle-timeout", "1")

    @classmethod
    def tearDownClass(cls):
        cls.kv.stop_ok()

    def test_idle_clients_are_closed(self):
        for port in (self.kv.rport, self.kv.mport):
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
                self.assertEqual(read_to_eof(s), b"")  # closed without a word, like Redis
        wait_until(lambda: "idle for 1 s (--idle-timeout)" in self.kv.log_text(), "the log line")

    def slowloris(self, port, head, expected):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(head)
            sent = 0
            s.settimeout(0.25)
            closed_by_server = False
            # A byte every 0.25 s: each keeps the connection busy, none completes
            # the request. Bounded: the server must close it well before WAIT.
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                try:
                    s.sendall(b"x")
                    sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    closed_by_server = True
                    break
                try:
                    data = s.recv(4096)
                    self.assertEqual(data + read_to_eof(s), expected)
                    closed_by_server = True
                    break
                except socket.timeout:
                    continue
            self.assertTrue(closed_by_server, "a slowloris client kept its connection")
            self.assertGreater(sent, 2)

    def test_slowloris_is_closed_with_an_error(self):
        self.slowloris(self.kv.rport, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n",
                       b"-ERR request incomplete at --idle-timeout: closing\r\n")
        self.slowloris(self.kv.mport, b"set k 0 0 100000\r\n",
                       b"SERVER_ERROR request incomplete at --idle-timeout\r\n")
        wait_until(lambda: "sent an incomplete request for 1 s" in self.kv.log_text(),
                   "the slowloris log line")

    def test_trickled_refused_value_is_closed(self):
        # A value past --max-item-size is refused at once and swallowed as it
        # arrives, so each trickled byte is consumed; the request is still
        # unfinished, and the deadline runs from its first byte.
        with socket.create_connection(("127.0.0.1", self.kv.mport), timeout=WAIT) as s:
            s.sendall(b"set k 0 0 2000000\r\n")
            s.settimeout(0.25)
            data, closed, sent = b"", False, 0
            deadline = time.monotonic() + WAIT
            while not closed and time.monotonic() < deadline:
                try:
                    s.sendall(b"x")
                    sent += 1
                    chunk = s.recv(4096)
                    closed = not chunk
                    data += chunk
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
            self.assertTrue(closed, "a client trickling a refused value kept its connection")
            self.assertEqual(data, b"SERVER_ERROR object too large for cache\r\n"
                                   b"SERVER_ERROR request incomplete at --idle-timeout\r\n")
            self.assertGreater(sent, 2)

    def test_busy_client_stays(self):
        # Requests spaced below the timeout, for several timeouts in total.
        with socket.create_connection(("127.0.0.1", self.kv.rport), timeout=WAIT) as r, \
                socket.create_connection(("127.0.0.1", self.kv.mport), timeout=WAIT) as m:
            for _ in range(8):
                r.sendall(resp("PING"))
                self.assertEqual(recv_until(r, b"\r\n"), b"+PONG\r\n")
                m.sendall(b"version\r\n")
                self.assertTrue(recv_until(m, b"\r\n").startswith(b"VERSION"))
                time.sleep(0.4)

    def test_client_not_reading_replies_is_closed(self):
        # Small replies, never read: kv's writes block once the socket buffers
        # are full, and --idle-timeout ends the wait.
        redis_set(self.kv, b"small", b"v" * 16384)
        memcache_set(self.kv, b"small", b"v" * 16384)
        for port, request in ((self.kv.rport, resp("GET", "small")),
                              (self.kv.mport, b"get small\r\n")):
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            stop = sending_without_reading(s, request * 64)
            wait_until(lambda: stop.is_set(), "kv to drop a client that never reads")
            s.close()
        wait_until(lambda: self.kv.log_text().count("did not read its replies for 1 s") >= 2,
                   "the log lines")
        still_serves(self.kv)


def sending_without_reading(sock, chunk):
    """Sends `chunk` over and over from a thread, never reading; the returned
    event is set once the server closed or reset the connection."""
    done = threading.Event()

    def run():
        sock.settimeout(WAIT * 2)
        try:
            while True:
                sock.sendall(chunk)
        except OSError:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


@unittest.skipIf(MODE == "slow", "fast tests run in the kv suite")
class OutputBuffer(unittest.TestCase):
    """A client that asks for more than --max-output-buffer of replies and
    does not read them gets an error and is disconnected; one that pipelines
    requests without reading is held by TCP backpressure (kv stops reading it)
    until --idle-timeout. Either way kv's memory stays bounded and others are
    served."""

    VALUE = 256 * 1024

    @classmethod
    def setUpClass(cls):
        cls.kv = Kv("--max-output-buffer", "4M", "--idle-timeout", "2")
        for k in range(4):  # keys on both shards
            redis_set(cls.kv, b"big%d" % k, b"b" * cls.VALUE)
            memcache_set(cls.kv, b"big%d" % k, b"b" * cls.VALUE)

    @classmethod
    def tearDownClass(cls):
        cls.kv.stop_ok()

    def peak_rss_until(self, done, before):
        peak = before
        deadline = time.monotonic() + WAIT
        while not done() and time.monotonic() < deadline:
            peak = max(peak, self.kv.rss())
            time.sleep(0.01)
        self.assertTrue(done(), "the slow reader was not disconnected")
        return peak

    def test_multi_get_past_the_limit_is_refused(self):
        keys = [b"big%d" % (i % 4) for i in range(300)]  # 75 MB of replies
        for port, request, error in (
                (self.kv.rport, resp("MGET", *keys),
                 b"-ERR output buffer limit reached (--max-output-buffer): closing\r\n"),
                (self.kv.mport, b"get " + b" ".join(keys) + b"\r\n",
                 b"SERVER_ERROR out of memory writing get response\r\n")):
            counted = disconnections_counted(self.kv)
            before = self.kv.rss()
            logged = self.kv.log_text().count("passed --max-output-buffer")
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            s.sendall(request)  # and reads nothing until kv gave up on it
            peak = self.peak_rss_until(
                lambda: self.kv.log_text().count("passed --max-output-buffer") > logged, before)
            self.assertEqual(read_to_eof(s), error)  # no partial multi-get, then EOF
            s.close()
            self.assertEqual(disconnections_counted(self.kv), counted + 1)
            print("\nmulti-get of 75 MB, --max-output-buffer 4M: RSS %.1f -> peak %.1f MB"
                  % (before / MB, peak / MB), file=sys.stderr)
            self.assertLess(peak - before, 48 * MB)
            still_serves(self.kv)

    def test_pipelining_without_reading(self):
        for port, request in ((self.kv.rport, b"".join(resp("GET", "big%d" % k) for k in range(4))),
                              (self.kv.mport, b"".join(b"get big%d\r\n" % k for k in range(4)))):
            before = self.kv.rss()
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            stop = sending_without_reading(s, request * 16)  # 16 MB of replies per send
            # Meanwhile another client is served.
            still_serves(self.kv)
            peak = self.peak_rss_until(stop.is_set, before)
            s.close()
            print("\npipelined GETs never read: RSS %.1f -> peak %.1f MB"
                  % (before / MB, peak / MB), file=sys.stderr)
            self.assertLess(peak - before, 48 * MB)
        log = self.kv.log_text()
        self.assertTrue("did not read its replies for 2 s" in log or
                        "passed --max-output-buffer" in log, log[-2000:])
        still_serves(self.kv)


@unittest.skipIf(MODE == "slow", "fast tests run in the kv suite")
@unittest.skipIf(SANITIZED, "ASan reserves terabytes of address space (no RLIMIT_AS) and "
                 "its operator new aborts instead of throwing std::bad_alloc")
class FaultInOneRequest(unittest.TestCase):
    """A command that fails inside (here: std::bad_alloc, the address space
    being capped) is answered with an error and logged; the connection and
    the process go on."""

    def test_bad_alloc_in_a_command_is_an_error_reply(self):
        cap = 4 << 30

        def limit_address_space():
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        kv = Kv("--proto-max-bulk-len", "8G", preexec=limit_address_space)
        try:
            with socket.create_connection(("127.0.0.1", kv.rport), timeout=WAIT) as s:
                # SETRANGE at offset 6G builds a 6 GB string: past the 4 GB cap.
                s.sendall(resp("SETRANGE", "k", 6 << 30, "x") + resp("PING"))
                reply = recv_until(s, b"+PONG\r\n")
                self.assertTrue(reply.startswith(b"-ERR internal error: "), reply)
                self.assertIn(b"bad_alloc", reply)
                # The same, batched to the other shard: keys on both shards.
                s.sendall(resp("SET", "a", "1") + resp("SET", "b", "1") +
                          resp("SETRANGE", "a", 6 << 30, "x") + resp("SETRANGE", "b", 6 << 30, "x")
                          + resp("GET", "a") + resp("GET", "b"))
                reply = recv_until(s, b"$1\r\n1\r\n$1\r\n1\r\n")
                self.assertEqual(reply.count(b"-ERR internal error: "), 2, reply)
            wait_until(lambda: "SETRANGE failed on shard" in kv.log_text(), "the log line")
            self.assertTrue(kv.alive())
            still_serves(kv)
        finally:
            kv.stop_ok()


@unittest.skipIf(MODE == "slow", "fast tests run in the kv suite")
class Disconnects(unittest.TestCase):
    """Clients that leave mid-request, mid-reply or with a reset leave
    nothing behind: descriptors and RSS return to the baseline."""

    def test_no_leak(self):
        kv = Kv("--idle-timeout", "30")
        try:
            redis_set(kv, b"big", b"b" * (512 * 1024))
            memcache_set(kv, b"big", b"b" * (512 * 1024))

            def round_of_abuse():
                for port, partial, big in (
                        (kv.rport, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nabc",
                         resp("GET", "big") * 20),
                        (kv.mport, b"set k 0 0 100000\r\nabc", b"get big\r\n" * 20)):
                    for reset in (False, True):
                        # Mid-request.
                        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                        s.sendall(partial)
                        if reset:
                            linger_reset(s)
                        s.close()
                        # Mid-reply: 10 MB asked for, 64 KB read.
                        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                        s.sendall(big)
                        s.recv(65536)
                        if reset:
                            linger_reset(s)
                        s.close()

            for _ in range(5):  # warm up pools and allocator arenas
                round_of_abuse()
            wait_until(lambda: kv.connections() == 0, "the warm-up connections to end")
            fds, rss = kv.fds(), kv.rss()
            for _ in range(100):
                round_of_abuse()
            wait_until(lambda: kv.connections() == 0, "every abusive connection to end")
            # <=: the baseline may still count the connections() probe's own
            # socket (kv closes its side when it sees the EOF, asynchronously);
            # a leak over 800 connections would stay far above it.
            wait_until(lambda: kv.fds() <= fds, "kv's descriptors to return to %d" % fds)
            after = kv.rss()
            print("\ndisconnects: fds %d -> %d, RSS %.1f -> %.1f MB after 800 abusive connections"
                  % (fds, kv.fds(), rss / MB, after / MB), file=sys.stderr)
            # Allocator caches move RSS by tens of MB either way; a leak of the
            # 10 MB replies or of connections would be far beyond this.
            self.assertLess(after, rss + 32 * MB)
            still_serves(kv)
        finally:
            kv.stop_ok()


# --------------------------------------------------------------- slow suite


@unittest.skipIf(MODE == "fast", "slow tests run in the slow suite")
class MemoryPressure(unittest.TestCase):
    """Filling past --max-memory evicts (or refuses with --no-evict), and
    RSS stays within 1.3x the limit plus a fixed overhead."""

    LIMIT = 64 * MB
    VALUE = 64 * 1024

    def fill(self, kv, total):
        """Writes `total` bytes of values over both protocols; returns the
        out-of-memory refusals seen."""
        refusals = 0
        value = b"m" * self.VALUE
        r = socket.create_connection(("127.0.0.1", kv.rport), timeout=WAIT)
        m = socket.create_connection(("127.0.0.1", kv.mport), timeout=WAIT)
        n = total // self.VALUE
        batch = 32
        for first in range(0, n, batch):
            keys = range(first, min(n, first + batch))
            r.sendall(b"".join(resp("SET", "r%d" % k, value) for k in keys))
            m.sendall(b"".join(b"set m%d 0 0 %d\r\n%s\r\n" % (k, len(value), value) for k in keys))
            for _ in keys:
                line = read_line_or_eof_buffered(r)
                if line.startswith(b"-OOM"):
                    refusals += 1
                else:
                    self.assertEqual(line, b"+OK\r\n")
                line = read_line_or_eof_buffered(m)
                if line.startswith(b"SERVER_ERROR out of memory"):
                    refusals += 1
                else:
                    self.assertEqual(line, b"STORED\r\n")
        r.close()
        m.close()
        return refusals

    def run_fill(self, evict):
        kv = Kv("--max-memory", "64M", *([] if evict else ["--no-evict"]))
        try:
            base = kv.rss()
            refusals = self.fill(kv, 4 * self.LIMIT)  # 256 MB asked, 64 MB allowed
            rss = kv.rss()
            stats = command(kv.mport, b"stats\r\n", b"END\r\n").decode()
            evictions = int(stats.split("STAT evictions ")[1].split()[0])
            used = int(stats.split("STAT bytes ")[1].split()[0])
            print("\nmax-memory 64M (%s): RSS %.1f -> %.1f MB, bytes %.1f MB, evictions %d, "
                  "refusals %d" % ("evict" if evict else "no-evict", base / MB, rss / MB,
                                   used / MB, evictions, refusals), file=sys.stderr)
            self.assertLessEqual(used, self.LIMIT)
            # 1.3x the limit plus a fixed overhead: what kv used before any data.
            # Not under ASan: it keeps up to 256 MB of freed memory in quarantine
            # (to catch use after free) and adds its shadow memory.
            if not SANITIZED:
                self.assertLess(rss, 1.3 * self.LIMIT + base + 16 * MB)
            if evict:
                self.assertGreater(evictions, 0)
                self.assertEqual(refusals, 0)
            else:
                self.assertEqual(evictions, 0)
                self.assertGreater(refusals, 0)
            still_serves(kv)
        finally:
            kv.stop_ok()

    def test_evicts(self):
        self.run_fill(True)

    def test_no_evict_refuses(self):
        self.run_fill(False)


_buffers = {}


def read_line_or_eof_buffered(sock):
    buf = _buffers.get(sock.fileno(), b"")
    while b"\r\n" not in buf:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise AssertionError("EOF in the middle of replies")
        buf += chunk
    line, _, rest = buf.partition(b"\r\n")
    _buffers[sock.fileno()] = rest
    return line + b"\r\n"


@unittest.skipIf(MODE == "fast", "slow tests run in the slow suite")
class TenThousandConnections(unittest.TestCase):
    """10 000 concurrent connections, each doing requests: all served under
    --max-connections 10000; with 9000 the rest get the error line."""

    N = 10000

    @classmethod
    def setUpClass(cls):
        raise_fd_limit(cls.N + 500)

    def run_clients(self, kv, limit):
        sel = selectors.DefaultSelector()
        socks = []
        try:
            for i in range(self.N):
                redis_side = i % 2 == 0
                port = kv.rport if redis_side else kv.mport
                for attempt in range(50):
                    try:
                        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                        break
                    except ConnectionRefusedError:
                        # Only the listen backlog can refuse: kv accepts on.
                        time.sleep(0.05)
                else:
                    raise AssertionError("connection %d refused 50 times" % i)
                socks.append((s, redis_side))
            # Every connection is open at once; now each does two requests.
            for s, redis_side in socks:
                s.setblocking(False)
                try:
                    s.send(resp("SET", "c%d" % s.fileno(), "v") + resp("PING") if redis_side
                           else b"version\r\nversion\r\n")
                except OSError:
                    pass  # a rejected connection may already be reset
                sel.register(s, selectors.EVENT_READ, [redis_side, b""])
            served = rejected = errors = 0
            pending = len(socks)
            deadline = time.monotonic() + 120
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1):
                    s = key.fileobj
                    redis_side, data = key.data
                    try:
                        chunk = s.recv(4096)
                    except ConnectionResetError:
                        chunk = b""
                    data += chunk
                    key.data[1] = data
                    want = b"+OK\r\n+PONG\r\n" if redis_side else None
                    done = False
                    if data in (b"-ERR max number of clients reached\r\n",
                                b"SERVER_ERROR too many open connections\r\n") and not chunk:
                        rejected += 1
                        done = True
                    elif redis_side and data == want:
                        served += 1
                        done = True
                    elif not redis_side and data.count(b"VERSION ") == 2 and data.endswith(b"\r\n"):
                        served += 1
                        done = True
                    elif not chunk:
                        errors += 1
                        done = True
                    if done:
                        sel.unregister(s)
                        pending -= 1
            return served, rejected, errors, pending
        finally:
            sel.close()
            for s, _ in socks:
                s.close()

    def check(self, limit):
        kv = Kv("--max-connections", str(limit))
        try:
            base_rss = kv.rss()
            served, rejected, errors, pending = self.run_clients(kv, limit)
            rss = kv.rss()
            print("\n%d connections, --max-connections %d: served %d, rejected %d, errors %d, "
                  "RSS %.1f -> %.1f MB" % (self.N, limit, served, rejected, errors, base_rss / MB,
                                           rss / MB), file=sys.stderr)
            self.assertEqual(pending, 0, "connections left without an answer")
            self.assertEqual(served, min(self.N, limit))
            if limit >= self.N:
                self.assertEqual(errors + rejected, 0)
            else:
                # A refused client that already sent its request may see kv's
                # close as a reset that overtakes the error line: counted, not lost.
                self.assertEqual(rejected + errors, self.N - limit)
                self.assertGreater(rejected, (self.N - limit) // 2)
            wait_until(lambda: kv.connections() == 0, "all connections to end")
            still_serves(kv)
        finally:
            kv.stop_ok()

    def test_all_served_below_the_limit(self):
        # A little room: kv may not have seen the start-up probes close yet.
        self.check(self.N + 16)

    def test_clear_rejection_beyond_the_limit(self):
        self.check(self.N - 1000)


@unittest.skipIf(MODE == "slow", "fast tests run in the kv suite")
class LogFlood(unittest.TestCase):
    """A client that makes kv close its connection thousands of times (a
    request past --client-query-buffer-limit) gets a bounded number of log
    lines: the first few per shard and window, then a count."""

    EVENTS = 3000

    def test_closing_thousands_of_clients_logs_a_bounded_number_of_lines(self):
        kv = Kv("--client-query-buffer-limit", "64k")
        try:
            # A bulk string longer than the limit: closed at its header.
            hostile = b"*1\r\n$1000000\r\n"
            for _ in range(self.EVENTS):
                with socket.create_connection(("127.0.0.1", kv.rport), timeout=WAIT) as s:
                    s.sendall(hostile)
                    self.assertEqual(read_to_eof(s), b"")
            still_serves(kv)
            log = kv.stop_ok()
        except BaseException:
            kv.kill()
            raise
        lines = log.count("reached max query buffer length")
        self.assertGreater(lines, 0, log[-2000:])
        # 10 lines per shard per 5 s window and one summary each: the test
        # takes well under a minute on two shards, so far fewer than this.
        self.assertLess(lines, 300, "%d lines for %d events" % (lines, self.EVENTS))
        self.assertIn("more such lines suppressed", log)


if __name__ == "__main__":
    KV = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)

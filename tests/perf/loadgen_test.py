#!/usr/bin/env python3
"""perf/loadgen checks every reply: against the real servers (apps/echo,
redis-server, memcached) it must count no errors, and against a server that
answers wrong bytes it must count them and exit 1. A load generator that
cannot tell a wrong reply from a right one would make every benchmark built
on it meaningless.

usage: loadgen_test.py LOADGEN ECHO
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py

LOADGEN = ECHO = None


def run_loadgen(*args, duration=0.5):
    """Runs loadgen briefly; returns (exit status, summary fields)."""
    proc = subprocess.run([LOADGEN, "--smp", "1", "--duration", str(duration), "--warmup", "0.1",
                           *args],
                          capture_output=True, text=True, timeout=60)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    fields = dict(re.findall(r"(\w+)=([\d.]+)", line))
    if not fields:
        raise AssertionError(f"no summary line; stdout {proc.stdout!r} stderr {proc.stderr!r}")
    return proc.returncode, {k: float(v) for k, v in fields.items()}


class corrupting_echo:
    """An echo server (a thread per connection) that flips one bit of every
    reply's byte `at`: a real socket peer whose replies are wrong."""

    def __init__(self, at):
        self.at = at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        seen = 0
        with conn:
            while data := conn.recv(65536):
                data = bytearray(data)
                if seen <= self.at < seen + len(data):
                    data[self.at - seen] ^= 1
                seen += len(data)
                conn.sendall(data)

    def close(self):
        self.listener.close()


class delaying_echo:
    """An echo server (a thread per connection) that holds every reply for
    `fast` seconds, and every tenth request of a connection for `slow`: a
    server with known latencies. loadgen's echo requests are `size` bytes."""

    def __init__(self, size, fast, slow):
        self.size, self.fast, self.slow = size, fast, slow
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        served, pending = 0, b""
        with conn:
            while True:
                while len(pending) < self.size:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                request, pending = pending[:self.size], pending[self.size:]
                served += 1
                time.sleep(self.slow if served % 10 == 0 else self.fast)
                try:
                    conn.sendall(request)
                except OSError:
                    return  # loadgen is done

    def close(self):
        self.listener.close()


def send_command(port, command, expect):
    """Sends raw protocol bytes and checks the reply begins with `expect`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command)
        reply = s.recv(4096)
        assert reply.startswith(expect), f"{command!r} got {reply!r}"


class echo_mode(unittest.TestCase):
    def test_real_echo_server_gives_no_errors(self):
        port = testlib.free_port()
        server = testlib.Server([ECHO, "--smp", "1", "--port", str(port)], ports=[port])
        try:
            status, summary = run_loadgen("--mode", "echo", "--port", str(port),
                                          "--connections", "4", "--size", "16K", "--pipeline", "2")
        finally:
            server.stop_ok()
        self.assertEqual(status, 0)
        self.assertEqual(summary["errors"], 0)
        self.assertGreater(summary["requests_per_s"], 0)

    def test_one_wrong_byte_is_caught(self):
        # The first reply is right up to byte 5000 of 16 KiB: every byte is
        # checked, not a prefix or the length.
        server = corrupting_echo(at=5000)
        try:
            status, summary = run_loadgen("--mode", "echo", "--port", str(server.port),
                                          "--connections", "1", "--size", "16K")
        finally:
            server.close()
        self.assertEqual(status, 1)
        self.assertEqual(summary["errors"], 1)


class latency(unittest.TestCase):
    """The percentiles and --rate against a server of known delays: 5 ms for
    nine requests in ten, 60 ms for the tenth. A delay is a lower bound on
    what loadgen may report (time.sleep never returns early); the upper
    bounds are generous, for a loaded machine."""

    FAST, SLOW = 0.005, 0.060

    def test_percentiles_of_a_closed_loop(self):
        server = delaying_echo(16, self.FAST, self.SLOW)
        try:
            status, summary = run_loadgen("--mode", "echo", "--port", str(server.port),
                                          "--connections", "1", "--size", "16", duration=1.5)
        finally:
            server.close()
        self.assertEqual(status, 0)
        self.assertEqual(summary["errors"], 0)
        # One request at a time, 10.5 ms each on average: at most ~95/s (the
        # window may catch one slow reply fewer than its share: 15 % more).
        self.assertLess(summary["requests_per_s"], 1 / (0.9 * self.FAST + 0.1 * self.SLOW) * 1.15)
        self.assertGreater(summary["requests_per_s"], 20)
        # p50 is a fast reply, p99 a slow one.
        self.assertGreaterEqual(summary["p50_us"], self.FAST * 1e6)
        self.assertLess(summary["p50_us"], self.SLOW * 1e6)
        self.assertGreaterEqual(summary["p99_us"], self.SLOW * 1e6)
        self.assertLess(summary["p99_us"], self.SLOW * 1e6 * 3)

    def test_rate_offers_the_asked_rate(self):
        server = delaying_echo(16, self.FAST, self.FAST)
        try:
            # 100 requests/s over 4 connections, each able to do ~200/s.
            status, summary = run_loadgen("--mode", "echo", "--port", str(server.port),
                                          "--connections", "4", "--size", "16", "--rate", "100",
                                          duration=2)
        finally:
            server.close()
        self.assertEqual(status, 0)
        self.assertEqual(summary["errors"], 0)
        self.assertGreater(summary["requests_per_s"], 80)
        self.assertLess(summary["requests_per_s"], 120)
        self.assertGreaterEqual(summary["p50_us"], self.FAST * 1e6)
        self.assertLess(summary["p50_us"], self.FAST * 1e6 * 10)


class kv_modes(unittest.TestCase):
    """--ratio 0:1 (GETs only) over 3 keys stored beforehand."""

    def check(self, mode, port, store):
        for key in range(3):
            store(f"key100:{key}", b"x" * 100)  # the right size, the wrong bytes
        status, summary = run_loadgen("--mode", mode, "--port", str(port), "--size", "100",
                                      "--keys", "3", "--ratio", "0:1", "--connections", "2")
        self.assertEqual(status, 1, "values loadgen did not store passed its check")
        self.assertGreater(summary["errors"], 0)
        # SETs and GETs of other keys (the size is in the name): loadgen's
        # own values must all check out.
        status, summary = run_loadgen("--mode", mode, "--port", str(port), "--size", "64",
                                      "--keys", "3", "--ratio", "1:1", "--connections", "2")
        self.assertEqual(status, 0)
        self.assertEqual(summary["errors"], 0)
        self.assertGreater(summary["hits"], 0)

    @unittest.skipUnless(shutil.which("redis-server"), "redis-server not installed")
    def test_resp_against_redis_server(self):
        port = testlib.free_port()
        server = testlib.Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"], ports=[port])
        try:
            def store(key, value):
                command = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                    len(key), key.encode(), len(value), value)
                send_command(port, command, b"+OK")
            self.check("resp", port, store)
        finally:
            server.kill()

    @unittest.skipUnless(shutil.which("memcached"), "memcached not installed")
    def test_memcache_against_memcached(self):
        port = testlib.free_port()
        user = ["-u", "root"] if os.geteuid() == 0 else []
        server = testlib.Server(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", *user],
                                ports=[port])
        try:
            def store(key, value):
                send_command(port, b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value),
                             b"STORED")
            self.check("memcache", port, store)
        finally:
            server.kill()


if __name__ == "__main__":
    LOADGEN, ECHO = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)

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
import unittest

import testlib

LOADGEN = ECHO = None


def run_loadgen(*args):
    """Runs loadgen briefly; returns (exit status, summary fields)."""
    proc = subprocess.run([LOADGEN, "--smp", "1", "--duration", "0.5", "--warmup", "0.1", *args],
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

#!/usr/bin/env python3
"""Security defaults of the apps: kv, echo and skeleton listen on loopback
unless told otherwise, and kv warns (one line at start) when it listens on
another address with no password guarding it.
usage: kv_security_test.py PATH/TO/kv PATH/TO/echo PATH/TO/skeleton
"""
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py
from testlib import free_port

KV = ECHO = SKELETON = None
WAIT = 10.0  # seconds: generous bound for a start-up (not a timing assertion)
WARNING = "non-loopback address"


def non_loopback_ipv4():
    """An IPv4 address of this host other than 127.x, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent (UDP connect)
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def can_connect(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def start_server(argv, port):
    """A server started with `argv`, ready on `port`; its stdout and stderr
    are kept in a file, which stop_ok() returns."""
    return testlib.Server(argv, ports=[port], timeout=WAIT, merge_stdout=True)


def start_kv(*extra):
    rport, mport = free_port(), free_port()
    return start_server([KV, "--smp", "1", "--redis-port", str(rport), "--memcache-port", str(mport)]
                        + list(extra), rport), rport, mport


class security_defaults(unittest.TestCase):
    def test_kv_warns_when_exposed_without_password(self):
        kv, _, _ = start_kv("--address", "0.0.0.0")
        out = kv.stop_ok()
        lines = [l for l in out.splitlines() if WARNING in l]
        self.assertEqual(len(lines), 1, out)
        self.assertIn("--requirepass", lines[0])

    def test_kv_warns_about_memcache_even_with_a_password(self):
        kv, _, _ = start_kv("--address", "0.0.0.0", "--requirepass", "secret")
        out = kv.stop_ok()
        lines = [l for l in out.splitlines() if WARNING in l]
        self.assertEqual(len(lines), 1, out)
        self.assertIn("memcache protocol has no authentication", lines[0])

    def test_kv_quiet_when_guarded_or_local(self):
        rport = free_port()
        kv = start_server([KV, "--smp", "1", "--address", "0.0.0.0", "--memcache-port", "0",
                           "--redis-port", str(rport), "--requirepass", "secret"], rport)
        out = kv.stop_ok()
        self.assertNotIn(WARNING, out)
        for address in ("127.0.0.1", "localhost"):
            kv, _, _ = start_kv("--address", address)
            out = kv.stop_ok()
            self.assertNotIn(WARNING, out, address)

    def test_default_address_is_loopback(self):
        other = non_loopback_ipv4()
        if other is None:
            self.skipTest("this host has no non-loopback IPv4 address to probe")
        kv, rport, mport = start_kv()
        try:
            self.assertTrue(can_connect("127.0.0.1", rport))
            self.assertFalse(can_connect(other, rport), "kv's RESP port is reachable on " + other)
            self.assertFalse(can_connect(other, mport), "kv's memcache port is reachable on " + other)
        finally:
            out = kv.stop_ok()
        self.assertNotIn(WARNING, out)
        for exe, flag in ((ECHO, "--port"), (SKELETON, "--port")):
            port = free_port()
            srv = start_server([exe, "--smp", "1", flag, str(port)], port)
            try:
                self.assertFalse(can_connect(other, port), exe + " is reachable on " + other)
            finally:
                srv.stop_ok()


if __name__ == "__main__":
    KV, ECHO, SKELETON = sys.argv[1], sys.argv[2], sys.argv[3]
    del sys.argv[1:4]
    unittest.main(verbosity=2)

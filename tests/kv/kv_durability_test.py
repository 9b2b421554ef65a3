#!/usr/bin/env python3
"""Integration test of the kv app's durability (--data-dir).

- kill -9 while clients write with --fsync always: every acknowledged write
  is there after a restart, and nothing that was never written;
- graceful restarts (SIGTERM, RESP SHUTDOWN) keep everything with everysec,
  including a restart with another --smp (keys re-distributed);
- a full disk (a small tmpfs mounted here, root only) refuses writes with
  errors (memcached gat/gats too: they log a touch), keeps serving reads,
  and accepts writes again once space returns.

usage: kv_durability_test.py PATH/TO/kv
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py
from testlib import free_port

testlib.require_modules("redis", "pymemcache.client.base")  # or runs /usr/bin/python3
import redis
from pymemcache.client.base import Client as MemcacheClient

KV = None
WAIT = 20.0  # seconds: generous bound for anything to happen (not a timing assertion)
BASE = os.environ.get("PERCORE_TEST_DIR", "/var/tmp")  # a disk, not tmpfs


class Server(testlib.Server):
    """A kv process on fresh ports; stderr kept in a file for failures."""

    def __init__(self, data_dir, *extra, smp=2):
        self.rport, self.mport = free_port(), free_port()
        argv = [KV, "--smp", str(smp), "--redis-port", str(self.rport), "--memcache-port",
                str(self.mport), "--data-dir", data_dir] + list(extra)
        # A replay may take a while on a loaded machine: 60 s to start.
        super().__init__(argv, ports=[self.rport], timeout=WAIT, start_timeout=60)

    def redis(self):
        return redis.Redis(port=self.rport, socket_timeout=WAIT)

    def memcache(self):
        return MemcacheClient(("127.0.0.1", self.mport), timeout=WAIT, connect_timeout=WAIT)


def value_of(i, gen=0):
    return ("v%d-%d-" % (i, gen)) + "x" * (i % 50)


def memcache_exchange(port, request, replies=1):
    """Sends raw memcached text on a fresh connection; returns what came back
    once `replies` END / SERVER_ERROR lines arrived (or the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(request)
        data = b""
        while data.count(b"END\r\n") + data.count(b"SERVER_ERROR") < replies:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def unmount(mnt):
    subprocess.run(["umount", mnt])
    os.rmdir(mnt)


class DurabilityTest(unittest.TestCase):
    def mount_small_tmpfs(self):
        """A 24 MiB tmpfs to fill up (skips the test where mounting is not
        allowed), unmounted at the end of the test."""
        mnt = tempfile.mkdtemp(prefix="kv-diskfull-", dir=BASE)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt],
                                 capture_output=True).returncode == 0
        if not mounted:
            os.rmdir(mnt)
            self.skipTest("cannot mount a small tmpfs here (needs root)")
        self.addCleanup(unmount, mnt)  # after start_server()'s: last in, first out
        return mnt

    def start_server(self, data_dir, *extra, smp=2):
        """A Server killed at the end of the test whatever happened (nothing
        to do once it was stopped)."""
        server = Server(data_dir, *extra, smp=smp)
        self.addCleanup(server.kill)
        return server

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kv-durability-", dir=BASE)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_kill9_with_fsync_always_keeps_every_acknowledged_write(self):
        server = Server(self.dir, "--fsync", "always")
        try:
            # 100 000 keys from 4 connections, pipelined: each pipeline's
            # replies mean its writes are durable.
            def writer(t):
                r = server.redis()
                for start in range(t * 25000, (t + 1) * 25000, 500):
                    p = r.pipeline(transaction=False)
                    for i in range(start, start + 500):
                        p.set("key:%d" % i, value_of(i))
                    self.assertTrue(all(p.execute()))
            testlib.run_threads(writer, [(t,) for t in range(4)])
            self.assertEqual(server.redis().dbsize(), 100000)
            # Now overwrite and add while being killed: track what was
            # acknowledged and what was sent.
            acked, sent, stop = set(), set(), threading.Event()
            lock = threading.Lock()

            def churn(t):
                r = server.redis()
                i = 100000 + t * 1000000
                try:
                    while not stop.is_set():
                        batch = list(range(i, i + 50))
                        i += 50
                        with lock:
                            sent.update(batch)
                        p = r.pipeline(transaction=False)
                        for k in batch:
                            p.set("key:%d" % k, value_of(k, 1))
                        p.execute()
                        with lock:
                            acked.update(batch)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
            threads = testlib.Threads(churn, [(t,) for t in range(3)]).start()
            deadline = time.monotonic() + WAIT
            while len(acked) < 5000 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait()
            stop.set()
            threads.join()
            self.assertGreater(len(acked), 0)
        finally:
            server.kill()
        server = Server(self.dir, "--fsync", "always")
        try:
            r = server.redis()
            for start in range(0, 100000, 1000):
                keys = ["key:%d" % i for i in range(start, start + 1000)]
                got = r.mget(keys)
                for i, v in zip(range(start, start + 1000), got):
                    self.assertEqual(v, value_of(i).encode(), "key:%d" % i)
            acked_l = sorted(acked)
            for start in range(0, len(acked_l), 1000):
                chunk = acked_l[start:start + 1000]
                got = r.mget(["key:%d" % i for i in chunk])
                for i, v in zip(chunk, got):
                    self.assertEqual(v, value_of(i, 1).encode(), "acknowledged key:%d lost" % i)
            # Nothing that was never written: every key is an initial one or a sent one.
            total = r.dbsize()
            self.assertGreaterEqual(total, 100000 + len(acked))
            self.assertLessEqual(total, 100000 + len(sent))
            extra = sorted(sent - acked)
            for start in range(0, len(extra), 1000):
                chunk = extra[start:start + 1000]
                for i, v in zip(chunk, r.mget(["key:%d" % i for i in chunk])):
                    self.assertIn(v, (None, value_of(i, 1).encode()))
        finally:
            server.stop_ok()

    def test_graceful_restarts_keep_everything_with_everysec(self):
        server = Server(self.dir)  # default: --fsync everysec
        expected = {}
        try:
            r = server.redis()
            # What a client asks before trusting the server with its data.
            self.assertEqual(r.config_get("appendonly"), {"appendonly": "yes"})
            self.assertEqual(r.config_get("appendfsync"), {"appendfsync": "everysec"})
            persistence = r.info("persistence")
            self.assertEqual(persistence["aof_enabled"], 1)
            self.assertEqual(persistence["aof_last_write_status"], "ok")
            self.assertEqual(persistence["percore_log_failed"], 0)
            self.assertIn("aof_buffer_length", persistence)
            p = r.pipeline(transaction=False)
            for i in range(20000):
                p.set("k%d" % i, value_of(i))
                expected["k%d" % i] = value_of(i).encode()
            p.execute()
            for i in range(0, 20000, 7):
                r.delete("k%d" % i)
                expected.pop("k%d" % i)
            r.incrby("counter", 41)
            r.incr("counter")
            expected["counter"] = b"42"
            r.append("k1", "-more")
            expected["k1"] += b"-more"
            r.set("ttl-long", "a", ex=3600)
            expected["ttl-long"] = b"a"
            r.set("ttl-short", "b", px=300)
            mc = server.memcache()
            mc.set("mc-key", b"from memcache", expire=0, noreply=False)
            expected["mc-key"] = b"from memcache"
        finally:
            server.stop_ok()  # SIGTERM flushes and closes the logs
        time.sleep(0.4)  # ttl-short expires while down
        # A different shard count: the keys move to their new owners.
        for smp, how in ((1, "shutdown"), (2, "sigterm")):
            server = Server(self.dir, smp=smp)
            try:
                r = server.redis()
                self.assertEqual(r.dbsize(), len(expected))
                keys = sorted(expected)
                for start in range(0, len(keys), 1000):
                    chunk = keys[start:start + 1000]
                    self.assertEqual(r.mget(chunk), [expected[k] for k in chunk])
                self.assertGreater(r.ttl("ttl-long"), 3000)
                self.assertIsNone(r.get("ttl-short"))
                r.set("written-smp-%d" % smp, "yes")
                expected["written-smp-%d" % smp] = b"yes"
                if how == "shutdown":
                    try:
                        r.shutdown()
                    except redis.exceptions.ConnectionError:
                        pass
                    self.assertEqual(server.proc.wait(timeout=WAIT), 0)
            finally:
                if how == "sigterm":
                    server.stop_ok()
                server.kill()
        server = Server(self.dir)
        try:
            r = server.redis()
            self.assertEqual(r.dbsize(), len(expected))
            # BGREWRITEAOF compacts every shard's log; the data stays.
            self.assertTrue(r.bgrewriteaof())
            deadline = time.monotonic() + WAIT
            while r.info("persistence")["aof_rewrites"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(r.info("persistence")["aof_rewrites"], 2)
            r.set("after-rewrite", "z")
            expected["after-rewrite"] = b"z"
        finally:
            server.stop_ok()
        server = Server(self.dir)
        try:
            r = server.redis()
            keys = sorted(expected)
            self.assertEqual(r.dbsize(), len(keys))
            self.assertEqual(r.mget(keys), [expected[k] for k in keys])
        finally:
            server.stop_ok()

    def test_corrupt_log_refuses_to_start_unless_repaired(self):
        server = Server(self.dir, "--fsync", "always", smp=1)
        try:
            r = server.redis()
            for i in range(2000):
                r.set("c%d" % i, "value-%d" % i)
        finally:
            server.stop_ok()
        path = os.path.join(self.dir, "shard-0", "log")
        with open(path, "r+b") as f:
            data = f.read()
            at = data.index(b"value-1000")
            f.seek(at)
            f.write(b"VALUE")
        proc = subprocess.run([KV, "--smp", "1", "--redis-port", str(free_port()),
                               "--memcache-port", "0", "--data-dir", self.dir],
                              capture_output=True, text=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(path, proc.stderr)
        self.assertIn("--repair-log", proc.stderr)
        server = Server(self.dir, "--repair-log", smp=1)
        try:
            r = server.redis()
            self.assertEqual(r.get("c999"), b"value-999")
            self.assertIsNone(r.get("c1000"))
            self.assertEqual(r.dbsize(), 1000)
        finally:
            server.stop_ok()

    def test_disk_full_refuses_writes_and_recovers(self):
        mnt = self.mount_small_tmpfs()
        data = os.path.join(mnt, "data")
        server = self.start_server(data, "--fsync", "always", smp=1)
        filler = os.path.join(mnt, "filler")
        free = shutil.disk_usage(mnt).free
        with open(filler, "wb") as f:
            f.write(b"\0" * (free - (4 << 20)))
        mc = server.memcache()
        r = server.redis()
        value = b"d" * 4000
        acked, refused = [], 0
        for i in range(5000):
            try:
                mc.set("full%d" % i, value, noreply=False)
                acked.append(i)
            except Exception as e:  # pymemcache raises MemcacheServerError
                self.assertIn("out of disk", str(e))
                refused += 1
                if refused >= 3:
                    break
        self.assertGreater(refused, 0, "the disk never filled up")
        with self.assertRaises(redis.exceptions.ResponseError) as cm:
            r.set("resp-key", "x")
        self.assertIn("disk", str(cm.exception))
        # Every write that would be logged is refused with an error, not
        # answered as if it did nothing: DEL (not 0), MSETNX (not 0),
        # GETEX with an expiry option.
        victim = "full%d" % acked[0]
        for name, call in (("DEL", lambda: r.delete(victim)),
                           ("DEL missing", lambda: r.delete("never-set")),
                           ("MSETNX", lambda: r.msetnx({"nx-a": "1", "nx-b": "2"})),
                           ("GETEX EX", lambda: r.getex(victim, ex=100)),
                           ("GETEX PERSIST", lambda: r.getex(victim, persist=True)),
                           ("FLUSHALL", lambda: r.flushall())):
            with self.assertRaises(redis.exceptions.ResponseError, msg=name) as cm:
                call()
            self.assertIn("disk", str(cm.exception), name)
        with self.assertRaises(Exception) as cm:  # pymemcache's MemcacheServerError
            mc.flush_all(noreply=False)
        self.assertIn("out of disk", str(cm.exception))
        # memcached gat/gats log a touch: refused as a whole (no VALUE line,
        # the expiry unchanged, missing keys alike); the get after it is answered.
        for request in (b"gat 100 %s\r\n", b"gats 100 %s never-set\r\n", b"gat -1 %s\r\n"):
            self.assertEqual(memcache_exchange(server.mport, request % victim.encode()),
                             b"SERVER_ERROR out of disk\r\n", request)
        self.assertEqual(memcache_exchange(server.mport, b"gat 0 never-set\r\n"),
                         b"SERVER_ERROR out of disk\r\n")
        self.assertEqual(memcache_exchange(server.mport, b"gat 100 %s\r\nget %s\r\n" %
                                           (victim.encode(), victim.encode()), replies=2),
                         b"SERVER_ERROR out of disk\r\nVALUE %s 0 4000\r\n%s\r\nEND\r\n" %
                         (victim.encode(), value))
        self.assertEqual(r.ttl(victim), -1)  # neither GETEX EX nor gat changed it
        self.assertIsNone(r.get("nx-a"))
        # Reads keep working, GETEX without options among them.
        self.assertEqual(r.getex(victim), value)
        self.assertEqual(mc.get(victim), value)
        self.assertEqual(r.get("full%d" % acked[-1]), value)
        os.unlink(filler)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                r.set("resp-key", "back")
                break
            except redis.exceptions.ResponseError:
                self.assertLess(time.monotonic(), deadline, "writes never came back")
                time.sleep(0.1)
        mc.set("after-full", b"ok", noreply=False)
        self.assertEqual(memcache_exchange(server.mport, b"gat 100 %s\r\n" % victim.encode()),
                         b"VALUE %s 0 4000\r\n%s\r\nEND\r\n" % (victim.encode(), value))
        self.assertTrue(0 < r.ttl(victim) <= 100)
        server.stop_ok()
        server = self.start_server(data, "--fsync", "always", smp=1)
        r = server.redis()
        for i in acked:
            self.assertEqual(r.get("full%d" % i), value)
        self.assertEqual(r.get("resp-key"), b"back")
        self.assertEqual(r.get("after-full"), b"ok")
        server.stop_ok()

    def test_disk_full_on_two_shards_refuses_multi_shard_writes(self):
        # MSETNX and DEL over keys of both shards take another path (a
        # cross-shard check, steps combined on the connection's shard), and
        # so does a memcached gat of many keys (replies merged, batches).
        mnt = self.mount_small_tmpfs()
        server = self.start_server(os.path.join(mnt, "data"), "--fsync", "always", smp=2)
        r = server.redis()
        for i in range(200):  # keys on both shards, before the disk fills
            r.set("two%d" % i, "v")
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (shutil.disk_usage(mnt).free - (4 << 20)))
        # Until both shards refuse: 30 refusals in a row (random keys).
        value, in_a_row = b"d" * 4000, 0
        for i in range(20000):
            try:
                r.set("fill%d" % i, value)
                in_a_row = 0
            except redis.exceptions.ResponseError as e:
                self.assertIn("disk", str(e))
                in_a_row += 1
                if in_a_row >= 30:
                    break
        self.assertGreaterEqual(in_a_row, 30, "the disk never filled up on both shards")
        keys = ["two%d" % i for i in range(200)]
        for name, call in (("DEL", lambda: r.delete(*keys)),
                           ("UNLINK", lambda: r.unlink(*keys)),
                           ("MSETNX", lambda: r.msetnx({"new%d" % i: "x" for i in range(20)}))):
            with self.assertRaises(redis.exceptions.ResponseError, msg=name) as cm:
                call()
            self.assertIn("disk", str(cm.exception), name)
        # A gat of keys of both shards cut in two batches (300 keys, 100
        # missing): one SERVER_ERROR for the whole command, nothing touched.
        gat = "gat 100 %s\r\nget two0\r\n" % " ".join(keys + ["none%d" % i for i in range(100)])
        self.assertEqual(memcache_exchange(server.mport, gat.encode(), replies=2),
                         b"SERVER_ERROR out of disk\r\nVALUE two0 0 1\r\nv\r\nEND\r\n")
        self.assertEqual({r.ttl(k) for k in keys}, {-1})
        self.assertEqual(r.mget(keys), [b"v"] * 200)
        self.assertEqual(r.exists(*["new%d" % i for i in range(20)]), 0)
        os.unlink(filler)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.assertTrue(r.msetnx({"new%d" % i: "x" for i in range(20)}))
                break
            except redis.exceptions.ResponseError:
                self.assertLess(time.monotonic(), deadline, "writes never came back")
                time.sleep(0.1)
        self.assertEqual(r.delete(*keys), 200)
        server.stop_ok()


if __name__ == "__main__":
    KV = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)

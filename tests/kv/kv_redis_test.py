#!/usr/bin/env python3
"""Integration test of the kv app's RESP2 (Redis) front end.

Starts `kv --smp 2` with both protocols on fresh ports and drives it with
redis-py, raw sockets, redis-cli (one-shot, stdin and --pipe),
redis-benchmark and pymemcache (one store for both protocols). Then a
differential check: the same command scripts and the same malformed input
against a real redis-server started here must give the same bytes back.

usage: kv_redis_test.py PATH/TO/kv
"""
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py
from testlib import free_port

testlib.require_modules("redis", "pymemcache.client.base")  # or runs /usr/bin/python3
import redis
from pymemcache.client.base import Client as MemcacheClient

KV = None
WAIT = 10.0  # seconds: generous bound for anything to arrive (not a timing assertion)


def start_kv(*extra):
    rport, mport = free_port(), free_port()
    argv = [KV, "--smp", "2", "--redis-port", str(rport), "--memcache-port", str(mport), *extra]
    p = testlib.Server(argv, ports=[rport], timeout=WAIT)
    p.memcache_port = mport
    return p


def encode(*args):
    """One request in RESP multibulk form."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_reply(f):
    """Reads one RESP2 reply from a binary file; returns its raw bytes."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-", b":"):
        return line
    if kind == b"$":
        n = int(rest)
        return line if n < 0 else line + f.read(n + 2)
    if kind == b"*":
        n = int(rest)
        return line + b"".join(read_reply(f) for _ in range(max(n, 0)))
    raise ValueError("bad reply line %r" % line)


def run_script(port, commands):
    """Sends every command in one pipeline; returns the raw replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"".join(encode(*c) for c in commands))
        f = s.makefile("rb")
        return [read_reply(f) for _ in commands]


def raw_exchange(port, data, half_close=False):
    """Sends raw bytes (then EOF if half_close) and reads until the server
    closes; returns (bytes, closed) with closed False if WAIT passed first."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        out = b""
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except socket.timeout:
            return out, False
        except (ConnectionResetError, BrokenPipeError):
            # The server closed with our bytes unread: what arrived still counts.
            while True:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            return out, True


def raw_until(port, data, expected_len):
    """Sends raw bytes and reads exactly `expected_len` reply bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(data)
        out = b""
        while len(out) < expected_len:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


class KvRedisTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kv = start_kv()
        cls.port = cls.kv.port
        cls.r = redis.Redis(port=cls.port, socket_timeout=WAIT)

    @classmethod
    def tearDownClass(cls):
        cls.r.close()
        cls.kv.stop_ok()

    def setUp(self):
        self.r.flushall()

    def keys_on_both_shards(self, prefix, n=20):
        return ["%s%d" % (prefix, i) for i in range(n)]

    def test_info_keyspace_counts_keys_with_a_ttl(self):
        r = self.r
        for k in self.keys_on_both_shards("plain"):
            r.set(k, "v")
        for k in self.keys_on_both_shards("ttl"):
            r.set(k, "v", ex=100)
        r.set("gone", "v", px=1)  # expired: not counted, even before it is removed
        time.sleep(0.01)  # lets its 1 ms pass (a TTL, not an ordering of events)
        db0 = r.info("keyspace")["db0"]
        self.assertEqual(db0["expires"], 20)
        self.assertGreater(db0["avg_ttl"], 90 * 1000)  # milliseconds, as Redis's
        self.assertLessEqual(db0["avg_ttl"], 100 * 1000)
        self.assertEqual(r.config_get("appendonly"), {"appendonly": "no"})  # no --data-dir

    def test_ping_echo_select_quit(self):
        r = self.r
        self.assertTrue(r.ping())
        self.assertEqual(r.echo("hi\r\nthere"), b"hi\r\nthere")
        self.assertEqual(run_script(self.port, [("PING", "x")]), [b"$1\r\nx\r\n"])
        self.assertTrue(r.execute_command("SELECT", 0))
        with self.assertRaisesRegex(redis.ResponseError, "DB index is out of range"):
            r.execute_command("SELECT", 1)
        out, closed = raw_exchange(self.port, encode("PING") + encode("QUIT") + encode("PING"))
        self.assertEqual(out, b"+PONG\r\n+OK\r\n")
        self.assertTrue(closed)

    def test_gets_of_the_other_shards_keys_read_its_store_in_place(self):
        r = self.r
        keys = ["shared%d" % i for i in range(40)]
        for i, k in enumerate(keys):
            r.set(k, "v%d" % i)
        before = r.info("stats")["percore_shared_gets"]
        for i, k in enumerate(keys):
            self.assertEqual(r.get(k), b"v%d" % i)
        self.assertIsNone(r.get("shared-missing"))
        r.set(keys[0], "changed")
        self.assertEqual(r.get(keys[0]), b"changed")
        shared = r.info("stats")["percore_shared_gets"] - before
        self.assertGreater(shared, 0)  # each key is on the other shard with odds 1/2
        self.assertLessEqual(shared, len(keys) + 2)
        # Off with --no-shared-reads: every GET goes to the owner.
        kv = start_kv("--no-shared-reads")
        try:
            c = redis.Redis(port=kv.port, socket_timeout=WAIT)
            for k in keys:
                c.set(k, "x")
                self.assertEqual(c.get(k), b"x")
            self.assertEqual(c.info("stats")["percore_shared_gets"], 0)
            c.close()
        finally:
            kv.stop_ok()

    def test_clients_move_to_the_shard_of_their_key(self):
        # Each client works on one key: those that landed on the other shard
        # move to the key's shard after 16 requests (INFO counts them), keep
        # their id and name, and lose or repeat no request across the move.
        def moved():
            return self.r.info("stats")["percore_clients_moved"]

        before = moved()
        clients = [redis.Redis(port=self.port, socket_timeout=WAIT, single_connection_client=True)
                   for _ in range(24)]  # all 24 on the key's shard: odds 2^-24
        try:
            ids = []
            for i, c in enumerate(clients):
                c.client_setname("mover%d" % i)
                ids.append(c.client_id())
            for c in clients:
                for _ in range(100):
                    c.incr("hot")
                pipe = c.pipeline(transaction=False)
                for _ in range(100):
                    pipe.incr("hot")
                pipe.execute()
            self.assertEqual(self.r.get("hot"), b"4800")
            after = moved()
            self.assertGreaterEqual(after - before, 1)
            self.assertLessEqual(after - before, len(clients))
            for i, c in enumerate(clients):
                self.assertEqual(c.client_getname(), "mover%d" % i)
                self.assertEqual(c.client_id(), ids[i])
            # Now on the key's shard, they stay there.
            for c in clients:
                for _ in range(100):
                    c.get("hot")
            self.assertEqual(moved(), after)
        finally:
            for c in clients:
                c.close()

    def test_set_options(self):
        r = self.r
        self.assertTrue(r.set("k", "v"))
        self.assertIsNone(r.set("k", "w", nx=True))
        self.assertEqual(r.get("k"), b"v")
        self.assertTrue(r.set("k", "w", xx=True))
        self.assertIsNone(r.set("nope", "w", xx=True))
        self.assertEqual(r.set("k", "x", get=True), b"w")
        self.assertTrue(r.set("k", "x", ex=100))
        self.assertTrue(98 <= r.ttl("k") <= 100)
        self.assertTrue(r.set("k", "y", keepttl=True))
        self.assertTrue(98 <= r.ttl("k") <= 100)
        self.assertTrue(r.set("k", "z"))
        self.assertEqual(r.ttl("k"), -1)
        self.assertTrue(r.set("k", "z", px=100000))
        self.assertTrue(98000 <= r.pttl("k") <= 100000)
        self.assertTrue(r.set("k", "z", exat=int(time.time()) + 1000))
        self.assertTrue(990 <= r.ttl("k") <= 1000)
        self.assertTrue(r.set("k", "z", pxat=int(time.time() * 1000) + 1000000))
        self.assertTrue(990 <= r.ttl("k") <= 1000)
        self.assertTrue(r.set("k", "z", exat=1))  # in the past: gone at once
        self.assertIsNone(r.get("k"))
        with self.assertRaisesRegex(redis.ResponseError, "^syntax error"):
            r.execute_command("SET", "k", "v", "NX", "XX")
        with self.assertRaisesRegex(redis.ResponseError, "invalid expire time in 'set' command"):
            r.execute_command("SET", "k", "v", "EX", "0")

    def test_get_family(self):
        r = self.r
        r.set("a", "1")
        self.assertEqual(r.getdel("a"), b"1")
        self.assertIsNone(r.getdel("a"))
        r.set("b", "2")
        self.assertEqual(r.getex("b", ex=50), b"2")
        self.assertTrue(48 <= r.ttl("b") <= 50)
        self.assertEqual(r.getex("b", persist=True), b"2")
        self.assertEqual(r.ttl("b"), -1)
        self.assertEqual(r.getex("b", px=50000), b"2")
        self.assertEqual(r.getex("b", exat=1), b"2")
        self.assertEqual(r.exists("b"), 0)
        self.assertTrue(r.setnx("c", "1"))
        self.assertFalse(r.setnx("c", "2"))
        self.assertTrue(r.setex("d", 100, "v"))
        self.assertTrue(98 <= r.ttl("d") <= 100)
        self.assertTrue(r.psetex("e", 100000, "v"))
        self.assertTrue(98 <= r.ttl("e") <= 100)
        # A short TTL really expires (polled, no timing assertion).
        r.set("short", "v", px=50)
        deadline = time.monotonic() + WAIT
        while r.exists("short") and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(r.exists("short"), 0)
        self.assertEqual(r.pttl("short"), -2)

    def test_multi_key_over_both_shards(self):
        r = self.r
        keys = self.keys_on_both_shards("mk", 50)
        self.assertTrue(r.mset({k: k.upper() for k in keys}))
        self.assertEqual(r.mget(keys + ["missing"]), [k.upper().encode() for k in keys] + [None])
        self.assertEqual(r.exists(*keys, "missing", keys[0]), 51)
        self.assertEqual(r.delete(*keys[:10], "missing"), 10)
        self.assertEqual(r.unlink(*keys[10:20]), 10)
        self.assertEqual(r.dbsize(), 30)
        self.assertEqual(sorted(r.keys("*")), sorted(k.encode() for k in keys[20:]))
        self.assertEqual(sorted(r.keys("mk2?")), sorted(k.encode() for k in keys[20:30]))
        fresh = self.keys_on_both_shards("fresh", 10)
        self.assertTrue(r.msetnx({k: "1" for k in fresh}))
        # One existing key (on whichever shard) and nothing is set.
        self.assertFalse(r.msetnx({"new1": "1", "new2": "2", "new3": "3", fresh[5]: "x"}))
        self.assertEqual(r.exists("new1", "new2", "new3"), 0)
        self.assertEqual(r.get(fresh[5]), b"1")

    def test_msetnx_is_all_or_nothing_under_contention(self):
        keys = self.keys_on_both_shards("race", 8)
        results = {}

        def contender(name):
            c = redis.Redis(port=self.port, socket_timeout=WAIT)
            won = 0
            for round_ in range(100):
                won += c.msetnx({"%s:%d" % (k, round_): name for k in keys})
            results[name] = won
            c.close()

        testlib.run_threads(contender, [(n,) for n in ("a", "b", "c")])
        self.assertEqual(sum(results.values()), 100)  # exactly one winner per round
        for round_ in range(100):
            values = set(self.r.mget(["%s:%d" % (k, round_) for k in keys]))
            self.assertEqual(len(values), 1, "round %d mixed %r" % (round_, values))
            self.assertNotIn(None, values)

    def test_counters(self):
        r = self.r
        self.assertEqual(r.incr("n"), 1)
        self.assertEqual(r.incrby("n", 10), 11)
        self.assertEqual(r.decr("n"), 10)
        self.assertEqual(r.decrby("n", 20), -10)
        self.assertAlmostEqual(r.incrbyfloat("f", 1.5), 1.5)
        self.assertEqual(r.incrbyfloat("f", "0.1"), 1.6)
        self.assertEqual(r.get("f"), b"1.6")
        r.set("s", "abc")
        with self.assertRaisesRegex(redis.ResponseError, "value is not an integer or out of range"):
            r.incr("s")
        r.set("big", str(2**63 - 1))
        with self.assertRaisesRegex(redis.ResponseError, "increment or decrement would overflow"):
            r.incr("big")

    def test_string_ops(self):
        r = self.r
        self.assertEqual(r.append("a", "hello"), 5)
        self.assertEqual(r.append("a", " world"), 11)
        self.assertEqual(r.strlen("a"), 11)
        self.assertEqual(r.strlen("none"), 0)
        self.assertEqual(r.getrange("a", 0, 4), b"hello")
        self.assertEqual(r.getrange("a", -5, -1), b"world")
        self.assertEqual(r.setrange("a", 6, "WORLD"), 11)
        self.assertEqual(r.get("a"), b"hello WORLD")
        self.assertEqual(r.setrange("pad", 3, "x"), 4)
        self.assertEqual(r.get("pad"), b"\0\0\0x")
        r.set("t", "v", ex=100)
        r.append("t", "w")
        r.setrange("t", 0, "V")
        self.assertEqual(r.get("t"), b"Vw")
        self.assertTrue(98 <= r.ttl("t") <= 100)  # both keep the TTL

    def test_expire_family(self):
        r = self.r
        r.set("k", "v")
        self.assertTrue(r.expire("k", 100))
        self.assertTrue(98 <= r.ttl("k") <= 100)
        self.assertTrue(r.pexpire("k", 200000))
        self.assertTrue(198 <= r.ttl("k") <= 200)
        self.assertTrue(r.expireat("k", int(time.time()) + 300))
        self.assertTrue(298 <= r.ttl("k") <= 300)
        self.assertTrue(r.pexpireat("k", int(time.time() * 1000) + 400000))
        self.assertTrue(398000 <= r.pttl("k") <= 400000)
        self.assertTrue(r.persist("k"))
        self.assertFalse(r.persist("k"))
        self.assertEqual(r.ttl("k"), -1)
        self.assertEqual(r.ttl("none"), -2)
        self.assertFalse(r.expire("none", 10))
        self.assertEqual(r.type("k"), b"string")
        self.assertEqual(r.type("none"), b"none")
        self.assertTrue(r.expire("k", -1))
        self.assertEqual(r.exists("k"), 0)

    def test_scan_walks_every_shard(self):
        r = self.r
        keys = {("scan%d" % i).encode() for i in range(300)}
        r.mset({k: b"v" for k in keys})
        seen = set()
        cursor = 0
        calls = 0
        while True:
            cursor, page = r.scan(cursor=cursor, count=7)
            seen.update(page)
            calls += 1
            self.assertLess(calls, 10000)
            if cursor == 0:
                break
        self.assertEqual(seen, keys)
        self.assertEqual(set(r.scan_iter(match="scan1?")), {("scan1%d" % i).encode() for i in range(10)})
        with self.assertRaisesRegex(redis.ResponseError, "invalid cursor"):
            r.execute_command("SCAN", "abc")

    def test_flush(self):
        r = self.r
        r.mset({k: "1" for k in self.keys_on_both_shards("fl", 10)})
        self.assertTrue(r.flushdb())
        self.assertEqual(r.dbsize(), 0)
        r.set("x", "1")
        self.assertTrue(r.flushall())
        self.assertEqual(r.dbsize(), 0)

    def test_info_command_client_hello(self):
        r = self.r
        r.set("i", "1")
        info = r.info()
        for field in ("redis_version", "connected_clients", "used_memory", "total_commands_processed",
                      "keyspace_hits"):
            self.assertIn(field, info)
        self.assertEqual(info["db0"]["keys"], 1)
        self.assertEqual(set(r.info("keyspace")), {"db0"})
        self.assertEqual(info["db0"]["expires"], 0)
        self.assertEqual(set(r.info("memory")) >= {"used_memory", "maxmemory"}, True)
        # Raw: redis-py's COMMAND parsing expects Redis's own table.
        count_reply, table, docs = run_script(self.port, [("COMMAND", "COUNT"), ("COMMAND",),
                                                          ("COMMAND", "DOCS", "get")])
        count = int(count_reply[1:-2])
        self.assertGreater(count, 40)
        self.assertTrue(table.startswith(b"*%d\r\n" % count))
        self.assertTrue(docs.startswith(b"*2\r\n$3\r\nget\r\n"))
        self.assertTrue(r.client_setname("me"))
        self.assertIn(r.client_getname(), ("me", b"me"))
        self.assertGreater(r.client_id(), 0)
        hello = r.execute_command("HELLO", "2")
        self.assertIn(b"proto", hello)
        with self.assertRaisesRegex(redis.ResponseError, "unsupported protocol version"):
            r.execute_command("HELLO", "3")
        with self.assertRaisesRegex(redis.ResponseError, "unknown command 'FOO', with args beginning with: 'a' "):
            r.execute_command("FOO", "a")
        with self.assertRaisesRegex(redis.ResponseError, "wrong number of arguments for 'get' command"):
            r.execute_command("GET")

    def test_pipeline_of_10000(self):
        r = self.r
        pipe = r.pipeline(transaction=False)
        for i in range(5000):
            pipe.set("p%d" % i, "v%d" % i)
            pipe.get("p%d" % i)
        replies = pipe.execute()
        self.assertEqual(len(replies), 10000)
        for i in range(5000):
            self.assertTrue(replies[2 * i])
            self.assertEqual(replies[2 * i + 1], ("v%d" % i).encode())
        self.assertEqual(r.dbsize(), 5000)
        # The same as one raw write of 10 000 commands, DBSIZE last (ordered after them).
        data = b"".join(encode("INCR", "c%d" % (i % 100)) for i in range(10000)) + encode("DBSIZE")
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT) as s:
            s.sendall(data)
            f = s.makefile("rb")
            replies = [read_reply(f) for _ in range(10001)]
        self.assertEqual(replies[-1], b":5100\r\n")
        self.assertEqual(replies[9999], b":100\r\n")

    def test_binary_keys_and_values(self):
        r = self.r
        key = b"k\0\r\n*1\r\n$3\r\n"
        value = bytes(range(256)) * 40 + b"\r\n\0"
        self.assertTrue(r.set(key, value))
        self.assertEqual(r.get(key), value)
        self.assertEqual(r.strlen(key), len(value))
        self.assertEqual(r.mget([key, b"\0"]), [value, None])
        self.assertIn(key, r.keys("k*"))
        big = os.urandom(3 * 1024 * 1024)
        self.assertTrue(r.set("big", big))
        self.assertEqual(r.get("big"), big)

    def test_inline_commands(self):
        out = raw_until(self.port, b"SET inl \"a b\\x41\"\r\nGET inl\r\n\r\nPING\n", 22)
        self.assertEqual(out, b"+OK\r\n$4\r\na bA\r\n+PONG\r\n")

    def test_long_pipeline_with_inline_requests(self):
        # More requests than the session looks ahead at (32), and an inline
        # one among them with an escape (parsing unescapes in place, so the
        # look-ahead must stop there): every reply in order.
        def bulk(*args):
            return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

        data = b"".join(bulk(b"SET", b"pl:%d" % i, b"v%d" % i) for i in range(50))
        data += b'GET "pl:\\x37"\r\n'
        data += b"".join(bulk(b"GET", b"pl:%d" % i) for i in range(50))
        expected = b"+OK\r\n" * 50 + b"$2\r\nv7\r\n"
        expected += b"".join(b"$%d\r\nv%d\r\n" % (len(b"v%d" % i), i) for i in range(50))
        self.assertEqual(raw_until(self.port, data, len(expected)), expected)

    def test_cross_protocol(self):
        r = self.r
        mc = MemcacheClient(("127.0.0.1", self.kv.memcache_port), timeout=WAIT, default_noreply=False)
        try:
            mc.set("shared", b"from-memcache", noreply=False)
            self.assertEqual(r.get("shared"), b"from-memcache")
            r.set("shared2", "from-redis")
            self.assertEqual(mc.get("shared2"), b"from-redis")
            r.incr("ctr")
            self.assertEqual(mc.incr("ctr", 5), 6)
            self.assertEqual(r.get("ctr"), b"6")
            r.append("shared", "+")
            self.assertEqual(mc.get("shared"), b"from-memcache+")
            mc.delete("shared2", noreply=False)
            self.assertIsNone(r.get("shared2"))
            r.set("exp", "v", ex=100)
            self.assertEqual(mc.get("exp"), b"v")
        finally:
            mc.close()

    def test_protocol_errors_close_only_that_connection(self):
        cases = [
            (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*1\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n$999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\nGET\r\n", b"-ERR Protocol error: expected '$', got 'G'\r\n"),
            (b"x" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
            (b"SET a \"b\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
            (encode("PING") + b"*99999999999\r\n", b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"),
        ]
        for data, expected in cases:
            out, closed = raw_exchange(self.port, data)
            self.assertEqual(out, expected, data[:30])
            self.assertTrue(closed, data[:30])
        # Binary garbage: a reply or an error, never a crash or hang.
        rnd = random.Random(8)
        for _ in range(20):
            garbage = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 3000)))
            raw_exchange(self.port, garbage, half_close=True)
        self.assertTrue(self.r.ping())

    def test_big_bulk_header_does_not_allocate_it(self):
        # A 500 MB bulk announced and never sent: the server waits without
        # failing, and the rest of the server is fine.
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT) as s:
            s.sendall(b"*2\r\n$3\r\nGET\r\n$500000000\r\nabc")
            self.assertTrue(self.r.ping())

    @unittest.skipUnless(shutil.which("redis-cli"), "redis-cli not installed")
    def test_redis_cli(self):
        port = str(self.port)
        out = subprocess.run(["redis-cli", "-p", port, "ping"], capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(out.stdout.strip(), "PONG")
        out = subprocess.run(["redis-cli", "-p", port], input="set cli 42\nincr cli\nget cli\nmget cli nope\n",
                             capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(out.stdout.split("\n")[:5], ["OK", "43", "43", "43", ""])
        mass = b"".join(encode("SET", "mass:%d" % i, "v%d" % i) for i in range(20000))
        out = subprocess.run(["redis-cli", "-p", port, "--pipe"], input=mass, capture_output=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"errors: 0, replies: 20000", out.stdout)
        self.assertEqual(self.r.get("mass:19999"), b"v19999")

    @unittest.skipUnless(shutil.which("redis-benchmark"), "redis-benchmark not installed")
    def test_redis_benchmark(self):
        out = subprocess.run(["redis-benchmark", "-p", str(self.port), "-n", "20000", "-q", "-t",
                              "set,get,incr,mset"], capture_output=True, text=True, timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("ERR", out.stdout + out.stderr)
        lines = [l for l in out.stdout.replace("\r", "\n").split("\n") if "requests per second" in l]
        self.assertEqual(len(lines), 4, out.stdout)


class KvRedisAuthTest(unittest.TestCase):
    def test_requirepass(self):
        kv = start_kv("--requirepass", "s3cret")
        try:
            port = kv.port
            out = run_script(port, [("GET", "a"), ("PING",), ("FOO",), ("AUTH", "wrong"),
                                    ("AUTH", "default", "wrong"), ("HELLO", "2"), ("AUTH", "s3cret"),
                                    ("SET", "a", "1"), ("GET", "a")])
            self.assertEqual(out, [
                b"-NOAUTH Authentication required.\r\n",
                b"-NOAUTH Authentication required.\r\n",
                b"-ERR unknown command 'FOO', with args beginning with: \r\n",
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                b"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                b"select the RESP protocol version at the same time\r\n",
                b"+OK\r\n", b"+OK\r\n", b"$1\r\n1\r\n"])
            r = redis.Redis(port=port, password="s3cret", socket_timeout=WAIT)
            self.assertEqual(r.get("a"), b"1")
            r.close()
            hello = run_script(port, [("HELLO", "2", "AUTH", "default", "s3cret"), ("GET", "a")])
            self.assertEqual(hello[1], b"$1\r\n1\r\n")
            # Unauthenticated clients may not send big requests.
            out, closed = raw_exchange(port, encode(*(["x"] * 11)))
            self.assertEqual(out, b"-ERR Protocol error: unauthenticated multibulk length\r\n")
            self.assertTrue(closed)
        finally:
            kv.stop_ok()


# Command scripts whose replies must match a real redis-server byte for byte.
DIFF_SCRIPTS = [
    [("SET", "a", "1"), ("GET", "a"), ("SET", "a", "2", "NX"), ("SET", "a", "3", "XX", "GET"),
     ("SET", "b", "1", "XX"), ("SET", "b", "1", "NX", "GET"), ("GET", "b"), ("SET", "c", "v", "EX", "0"),
     ("SET", "c", "v", "EX", "-1"), ("SET", "c", "v", "EX", "abc"), ("SET", "c", "v", "PX"),
     ("SET", "c", "v", "EX", "10", "PX", "10"), ("SET", "c", "v", "KEEPTTL", "EX", "1"),
     ("SET", "c", "v", "EX", "100", "EX", "200"), ("TTL", "c"), ("SET", "c", "v2", "KEEPTTL"), ("TTL", "c"),
     ("SET", "c", "v3"), ("TTL", "c"), ("SET", "c", "v", "NX", "XX"), ("SET", "d", "v", "FOO"), ("SET",),
     ("GET",), ("GET", "a", "b"), ("GETDEL", "a"), ("GETDEL", "a"), ("GETEX", "b"), ("GETEX", "b", "EX", "100"),
     ("TTL", "b"), ("GETEX", "b", "PERSIST"), ("TTL", "b"), ("GETEX", "b", "EX", "10", "PERSIST"),
     ("GETEX", "b", "GET"), ("GETEX", "b", "EX", "0"), ("GETEX", "nokey", "EX", "10"), ("SETNX", "e", "1"),
     ("SETNX", "e", "2"), ("SETEX", "f", "100", "v"), ("TTL", "f"), ("SETEX", "f", "0", "v"),
     ("SETEX", "f", "abc", "v"), ("PSETEX", "g", "100000", "v"), ("PSETEX", "g", "-5", "v"), ("SETEX", "f", "10"),
     ("SET", "h", "v", "EXAT", "1"), ("GET", "h"), ("SET", "h", "v", "PXAT", "99999999999999"), ("GET", "h"),
     ("SET", "h", "v", "EX", "9223372036854775807")],
    [("INCR", "n"), ("INCRBY", "n", "10"), ("DECR", "n"), ("DECRBY", "n", "5"), ("INCRBY", "n", "abc"),
     ("INCRBY", "n", "1.5"), ("SET", "s", "hello"), ("INCR", "s"), ("SET", "big", "9223372036854775807"),
     ("INCR", "big"), ("SET", "small", "-9223372036854775808"), ("DECR", "small"),
     ("DECRBY", "x", "-9223372036854775808"), ("INCRBY", "x", "9223372036854775807"), ("INCRBY", "x", "1"),
     ("SET", "z", "007"), ("INCR", "z"), ("SET", "sp", " 1"), ("INCR", "sp"), ("SET", "pl", "+1"), ("INCR", "pl"),
     ("INCRBYFLOAT", "fl", "1.5"), ("INCRBYFLOAT", "fl", "0.1"), ("INCRBYFLOAT", "fl", "-1.6"),
     ("INCRBYFLOAT", "fl", "abc"), ("INCRBYFLOAT", "fl", "1e400"), ("SET", "fl2", "3.0e3"),
     ("INCRBYFLOAT", "fl2", "1"), ("INCRBYFLOAT", "s", "1"), ("INCRBYFLOAT", "n", "inf"),
     ("INCRBYFLOAT", "fl", "5.0e3"), ("INCRBYFLOAT", "fl", "0x10"), ("INCRBYFLOAT", "fl", " 1"),
     ("INCRBYFLOAT", "fl3", "1.23456789012345678"), ("INCRBYFLOAT", "fl4", "-0"), ("INCR",), ("INCRBY", "n")],
    [("APPEND", "a", "hello"), ("APPEND", "a", " world"), ("GET", "a"), ("STRLEN", "a"), ("STRLEN", "none"),
     ("GETRANGE", "a", "0", "4"), ("GETRANGE", "a", "-5", "-1"), ("GETRANGE", "a", "5", "2"),
     ("GETRANGE", "a", "-100", "100"), ("GETRANGE", "a", "-1", "-5"), ("GETRANGE", "none", "0", "1"),
     ("GETRANGE", "a", "x", "1"), ("GETRANGE", "a", "0"), ("SETRANGE", "a", "6", "WORLD"), ("GET", "a"),
     ("SETRANGE", "new", "5", "hi"), ("GET", "new"), ("SETRANGE", "new2", "0", ""), ("EXISTS", "new2"),
     ("SETRANGE", "a", "-1", "x"), ("SETRANGE", "a", "0", ""), ("SETRANGE", "a", "536870912", "x"),
     ("SETRANGE", "a", "x", "y"), ("APPEND", "a")],
    [("SET", "k", "v"), ("EXPIRE", "k", "100"), ("TTL", "k"), ("EXPIRE", "k", "100", "NX"),
     ("EXPIRE", "k", "200", "XX"), ("TTL", "k"), ("EXPIRE", "k", "50", "GT"), ("EXPIRE", "k", "300", "GT"),
     ("TTL", "k"), ("EXPIRE", "k", "400", "LT"), ("EXPIRE", "k", "10", "LT"), ("TTL", "k"), ("PERSIST", "k"),
     ("PERSIST", "k"), ("TTL", "k"), ("EXPIRE", "k", "10", "GT"), ("EXPIRE", "k", "10", "XX"),
     ("EXPIRE", "k", "10", "LT"), ("TTL", "k"), ("EXPIRE", "k", "10", "NX", "XX"),
     ("EXPIRE", "k", "10", "GT", "LT"), ("EXPIRE", "k", "10", "FOO"), ("EXPIRE", "none", "10"),
     ("EXPIRE", "k", "abc"), ("EXPIRE", "k", "9223372036854775807"), ("PEXPIRE", "k", "100000"),
     ("EXPIREAT", "k", "1"), ("EXISTS", "k"), ("SET", "k", "v"), ("PEXPIREAT", "k", "1"), ("EXISTS", "k"),
     ("SET", "k", "v"), ("EXPIRE", "k", "-1"), ("EXISTS", "k"), ("TTL", "none"), ("PTTL", "none"),
     ("TYPE", "k"), ("SET", "k", "v"), ("TYPE", "k"), ("TTL", "k"), ("PTTL", "k"), ("EXPIRE", "k"),
     ("TTL",), ("PERSIST", "none")],
    [("MSET", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", "6"),
     ("MGET", "a", "b", "c", "d", "e", "f", "g"), ("MSET", "a"), ("MSET", "a", "1", "b"),
     ("EXISTS", "a", "b", "c", "nope", "a"), ("DEL", "a", "b", "nope"), ("EXISTS", "a", "b"),
     ("UNLINK", "c", "d"), ("MSETNX", "a", "1", "b", "2"), ("MSETNX", "a", "1", "e", "2"), ("MGET", "a", "e"),
     ("MSETNX", "x"), ("MSETNX", "x", "1", "y"), ("DBSIZE",), ("FLUSHDB",), ("DBSIZE",), ("FLUSHALL", "ASYNC"),
     ("FLUSHDB", "foo"), ("MGET",), ("DEL",), ("DBSIZE", "x"), ("KEYS", "nomatch*"), ("RANDOMKEY",)],
    [("PING",), ("PING", "hello"), ("PING", "a", "b"), ("ECHO", "hi"), ("ECHO",), ("SELECT", "0"),
     ("SELECT", "x"), ("FOO",), ("FOO", "bar", "baz"), ("foo", "a\r\nb", "x" * 200),
     ("CLIENT", "SETNAME", "myname"), ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "bad name"),
     ("CLIENT", "FOO"), ("CLIENT", "SETNAME"), ("COMMAND", "FOO"), ("AUTH", "x"), ("AUTH", "default", "x"),
     ("AUTH", "bob", "x"), ("AUTH", "a", "b", "c"), ("HELLO", "4"), ("HELLO", "abc"), ("TYPE", "nokey"),
     ("SCAN", "abc"), ("SCAN", "0", "COUNT", "0"), ("SCAN", "0", "COUNT", "x"), ("SCAN", "0", "FOO", "bar"),
     ("SCAN", "0", "COUNT"), ("CONFIG", "GET", "save"), ("CONFIG", "GET", "appendonly"),
     ("COMMAND", "COUNT", "x"), ("GET", "x" * 100)],
]

# Malformed input: same bytes back and the connection closed, as redis-server does.
DIFF_RAW = [
    b"*abc\r\n", b"*\r\n", b"*+1\r\n", b"*1 \r\n", b"*2147483648\r\n", b"*1\r\n$-1\r\n", b"*1\r\n$\r\n",
    b"*1\r\n$03\r\nfoo\r\n", b"*1\r\n$536870913\r\n", b"*1\r\nfoo\r\n", b"*2\r\n$3\r\nGET\r\n:1\r\n",
    b"*1\r\n$4\r\nPINGXX*1\r\n$4\r\nPING\r\n", b"echo ab\"c d\"e\n", b"set \"a\n", b"set 'a'b\n",
    b"x \"\\x41\\x4a\\n\" 'it\\'s' \"\"\r\nab\"c d\" e\r\n", b"ECHO \"\\x4\"\n", b"\r\n\r\nPING\r\n",
    b"*-1\r\n*0\r\nPING\r\n", b"\x00\x01\x02garbage\r\n", b"*1\n$4\r\nPING\r\n", b"x" * 70000,
    b"*" + b"1" * 70000, b"*1\r\n$" + b"1" * 70000,
]


@unittest.skipUnless(shutil.which("redis-server"), "redis-server not installed")
class KvRedisDifferentialTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kv = start_kv()
        port = free_port()
        cls.redis = testlib.Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], ports=[port], timeout=WAIT)

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()
        cls.kv.stop_ok()

    def test_command_scripts(self):
        for i, script in enumerate(DIFF_SCRIPTS):
            mine = run_script(self.kv.port, [("FLUSHALL",)] + script)
            theirs = run_script(self.redis.port, [("FLUSHALL",)] + script)
            for cmd, a, b in zip(script, mine[1:], theirs[1:]):
                self.assertEqual(a, b, "script %d: %r" % (i, cmd))

    def test_malformed_input(self):
        for data in DIFF_RAW:
            mine = raw_exchange(self.kv.port, data, half_close=True)
            theirs = raw_exchange(self.redis.port, data, half_close=True)
            self.assertEqual(mine, theirs, data[:40])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    KV = sys.argv.pop(1)
    unittest.main(verbosity=2)

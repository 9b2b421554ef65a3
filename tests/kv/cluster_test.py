#!/usr/bin/env python3
"""Integration test: three kv nodes behind twemproxy (scripts/cluster).

`scripts/cluster up 3` on fresh ports, 10 000 keys written through the proxy
with pymemcache and 10 000 with redis-py, all read back through the proxy
(multi-key gets, which twemproxy splits per node), every node holds a share
(none empty, none over 60%), the same key maps to the same node in both pools.
Then node 2 is killed: the proxy must eject it and keep serving the other
nodes' keys, and the dead node's keys re-hash to live nodes. Node 2 is started
again: it must rejoin (and, when kv has --data-dir, its keys come back).
`scripts/cluster down` runs at the end, whatever happened; after a run that
passed, every kv node it stopped must have exited 0 (in the sanitized build a
leak or undefined behaviour gives another status), and the killed one by
SIGKILL.

usage: cluster_test.py SOURCE_ROOT PATH/TO/kv
Exit 77 (meson's "skipped") when nutcracker or the Python clients are missing.
"""
import concurrent.futures
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py

SKIP = 77
try:
    testlib.require_modules("redis", "pymemcache.client.base")  # or runs /usr/bin/python3
except ImportError:
    print("SKIP: cluster test needs python3-redis and python3-pymemcache", flush=True)
    sys.exit(SKIP)
import redis
from pymemcache.client.base import Client as MemcacheClient

KEYS = 10000
WAIT = 30.0  # seconds: bound for the proxy to react (not a timing assertion)
VICTIM = 2
CLIENTS = 8  # concurrent clients per protocol
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def fail(msg):
    raise AssertionError(msg)


def become_subreaper():
    """The processes scripts/cluster starts outlive it (each `up` or `start`
    exits once they answer), so `down` is not their parent and cannot learn
    how they exited. As a child subreaper this process inherits them instead
    of init, and os.waitpid gives their exit statuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_CHILD_SUBREAPER): " + os.strerror(err))


def exit_status(pid, what, timeout):
    """How pid, a process that scripts/cluster started and stopped, exited:
    its status, or minus the signal that ended it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            fail("%s (pid %d) is not a child of the test: its exit status is lost" % (what, pid))
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            fail("%s (pid %d) still runs %.0f s after it was stopped" % (what, pid, timeout))
        time.sleep(0.05)


def ports_free(base):
    for port in [base + i for i in range(8)] + [base + 101]:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def fresh_base_port():
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(30000, 60000)
        if ports_free(base):
            return base
    fail("no free port range for the cluster")


class Cluster:
    def __init__(self, root, kv):
        self.script = os.path.join(root, "scripts", "cluster")
        self.kv = kv
        self.state_dir = tempfile.mkdtemp(prefix="percore-cluster-")
        self.base = fresh_base_port()
        # pid -> (node index, the exit status expected once it is stopped)
        self.expected_exits = {}

    def run(self, *args, check=True):
        argv = [sys.executable, self.script, "--state-dir", self.state_dir, *args]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=180)
        if check and r.returncode != 0:
            fail("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def status(self):
        return json.loads(self.run("status", "--json").stdout)

    def note_nodes(self):
        """Notes the nodes running now (after `up` or `start`): a graceful
        stop must end each with status 0."""
        for n in self.status()["nodes"]:
            if n["alive"] and n["pid"] not in self.expected_exits:
                self.expected_exits[n["pid"]] = (n["index"], 0)

    def kill(self, index):
        """SIGKILLs node `index` (a crash): its status is to say so."""
        pid = next(n["pid"] for n in self.status()["nodes"] if n["index"] == index)
        self.run("kill", str(index))
        self.expected_exits[pid] = (index, -signal.SIGKILL)

    def check_exit_statuses(self):
        """After `down`: every node noted exited as expected (a kv that took
        more than `down`'s 10 s to stop was SIGKILLed)."""
        wrong = []
        for pid, (index, expected) in sorted(self.expected_exits.items()):
            status = exit_status(pid, "node %d" % index, WAIT)
            if status != expected:
                log = os.path.join(self.state_dir, "node-%d.log" % index)
                with open(log, errors="replace") as f:
                    tail = "".join(f.readlines()[-60:])
                wrong.append("node %d (pid %d) exited with %d, expected %d; the end of node-%d.log:\n%s"
                             % (index, pid, status, expected, index, tail))
        if wrong:
            fail("\n".join(wrong))
        return len(self.expected_exits)

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.state_dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.state_dir, name), errors="replace") as f:
                    out.append("--- %s (tail)\n%s" % (name, "".join(f.readlines()[-15:])))
        return "\n".join(out)


def parse_endpoints(stdout):
    """The `up` lines: node I memcache=H:P redis=H:P, then proxy memcache=H:P redis=H:P."""
    nodes, proxy = {}, None
    for line in stdout.splitlines():
        words = line.split()
        fields = dict(w.split("=", 1) for w in words if "=" in w)
        split = {k: (v.rsplit(":", 1)[0], int(v.rsplit(":", 1)[1])) for k, v in fields.items()}
        if words[0] == "node":
            nodes[int(words[1])] = split
        elif words[0] == "proxy":
            proxy = split
        else:
            fail("unexpected line from up: %r" % line)
    return nodes, proxy


def chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def memcache_keys_on(node, keys):
    """The subset of keys that node holds (asked directly, not via the proxy)."""
    c = MemcacheClient(node["memcache"], timeout=10, connect_timeout=10)
    held = set()
    for part in chunks(keys, 500):
        held.update(k.decode() if isinstance(k, bytes) else k for k in c.get_many(part))
    c.close()
    return held


def redis_keys_on(node, keys):
    r = redis.Redis(host=node["redis"][0], port=node["redis"][1], socket_timeout=10)
    held = set()
    for part in chunks(keys, 500):
        held.update(k for k, v in zip(part, r.mget(part)) if v is not None)
    r.close()
    return held


def proxy_stats(cluster):
    """The proxy's stats via `status --json` (retried: a loaded machine may
    make one fetch time out)."""
    for _ in range(20):
        stats = cluster.status()["proxy"]["stats"]
        if stats:
            return stats
        time.sleep(0.2)
    fail("cannot read the proxy's stats")


def pool_stats(cluster, pool):
    return proxy_stats(cluster).get(pool, {})


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, kv = sys.argv[1], os.path.abspath(sys.argv[2])
    if not shutil.which("nutcracker"):
        print("SKIP: nutcracker (twemproxy) is not installed: apt-get install nutcracker", flush=True)
        return SKIP
    has_data_dir = "--data-dir" in subprocess.run([kv, "--help"], stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT, text=True).stdout
    become_subreaper()
    cluster = Cluster(root, kv)
    try:
        try:
            run_test(cluster, has_data_dir)
        finally:
            cluster.run("down", check=False)
        stopped = cluster.check_exit_statuses()
        print("down: the %d kv processes exited as expected (0, SIGKILL for the killed one)" % stopped,
              flush=True)
    except BaseException:
        print(cluster.logs(), file=sys.stderr)
        raise
    finally:
        leftover = os.path.exists(os.path.join(cluster.state_dir, "cluster.json"))
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
        if leftover:
            fail("down left cluster.json behind")
    print("PASS", flush=True)
    return 0


def check_documented_config(root):
    """The nutcracker.yml shown in docs/deployment.md is one nutcracker accepts."""
    with open(os.path.join(root, "docs", "deployment.md")) as f:
        page = f.read()
    start = page.find("```text\n# nutcracker.yml\n")
    if start < 0:
        fail("docs/deployment.md has no ```text block starting with '# nutcracker.yml'")
    body = page[start + len("```text\n"):page.index("\n```", start + 8)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as conf:
        conf.write(body + "\n")
        conf.flush()
        r = subprocess.run(["nutcracker", "--test-conf", "-c", conf.name], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or "syntax is ok" not in r.stdout:
        fail("nutcracker rejects the config in docs/deployment.md:\n%s" % r.stdout)


def run_test(cluster, has_data_dir):
    check_documented_config(os.path.dirname(os.path.dirname(cluster.script)))
    # A generous server timeout: the shared test machines stall processes for
    # hundreds of ms, and a timeout makes twemproxy count a failure.
    up = cluster.run("up", "3", "--base-port", str(cluster.base), "--kv", cluster.kv, "--timeout", "3000",
                     "--max-memory", "64M")
    cluster.note_nodes()
    nodes, proxy = parse_endpoints(up.stdout)
    if sorted(nodes) != [1, 2, 3] or proxy is None:
        fail("up printed %r" % up.stdout)
    if proxy["memcache"] != ("127.0.0.1", cluster.base) or proxy["redis"] != ("127.0.0.1", cluster.base + 1):
        fail("proxy endpoints do not follow --base-port: %r" % up.stdout)
    with open(os.path.join(cluster.state_dir, "nutcracker.yml")) as f:
        config = f.read()
    for needle in ("distribution: ketama", "auto_eject_hosts: true", "redis: true", "kv3"):
        if needle not in config:
            fail("nutcracker.yml lacks %r:\n%s" % (needle, config))
    print("up: %d nodes, proxy on %d/%d" % (len(nodes), cluster.base, cluster.base + 1), flush=True)

    mc = MemcacheClient(proxy["memcache"], timeout=10, connect_timeout=10)
    rc = redis.Redis(host=proxy["redis"][0], port=proxy["redis"][1], socket_timeout=10)
    mkeys = ["mc:%d:%x" % (i, random.getrandbits(32)) for i in range(KEYS)]
    rkeys = ["rd:%d:%x" % (i, random.getrandbits(32)) for i in range(KEYS)]
    mval = {k: ("m-" + k + "-" + "x" * (i % 50)).encode() for i, k in enumerate(mkeys)}
    rval = {k: ("r-" + k + "-" + "y" * (i % 70)).encode() for i, k in enumerate(rkeys)}

    # Writes: pipelined batches, so many requests share the proxy's one
    # connection per node.
    for part in chunks(mkeys, 100):
        failed = mc.set_many({k: mval[k] for k in part}, noreply=False)
        if failed:
            fail("memcache set through the proxy failed for %d keys, e.g. %s" % (len(failed), failed[:3]))
    for part in chunks(rkeys, 200):
        pipe = rc.pipeline(transaction=False)
        for k in part:
            pipe.set(k, rval[k])
        if not all(r is True for r in pipe.execute()):
            fail("redis SET through the proxy failed")

    # Reads: multi-key gets and MGETs, which the proxy splits by node.
    def read_all():
        got = {}
        for part in chunks(mkeys, 100):
            got.update(mc.get_many(part))
        if got != mval:
            missing = [k for k in mkeys if got.get(k) != mval[k]]
            fail("memcache read back through the proxy: %d of %d wrong, e.g. %s" % (len(missing), KEYS,
                                                                                  missing[:3]))
        for part in chunks(rkeys, 100):
            values = rc.mget(part)
            wrong = [k for k, v in zip(part, values) if v != rval[k]]
            if wrong:
                fail("redis MGET through the proxy: wrong values for %s" % wrong[:3])
    read_all()
    print("wrote and read back %d keys per protocol through the proxy" % KEYS, flush=True)

    # Many clients at once, pipelining: the proxy multiplexes them all onto
    # its one connection per node and pool.
    def client_reads(i):
        m = MemcacheClient(proxy["memcache"], timeout=10, connect_timeout=10)
        r = redis.Redis(host=proxy["redis"][0], port=proxy["redis"][1], socket_timeout=10)
        try:
            for part in chunks(mkeys[i::CLIENTS], 50):
                if m.get_many(part) != {k: mval[k] for k in part}:
                    return "memcache client %d read wrong values" % i
            part = rkeys[i::CLIENTS]
            pipe = r.pipeline(transaction=False)
            for k in part:
                pipe.get(k)
            if pipe.execute() != [rval[k] for k in part]:
                return "redis client %d read wrong values" % i
            return None
        finally:
            m.close()
            r.close()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        problems = [p for p in pool.map(client_reads, range(CLIENTS)) if p]
    if problems:
        fail("; ".join(problems))
    stats = proxy_stats(cluster)
    for pool_name in ("memcache", "redis"):
        for name in ("kv1", "kv2", "kv3"):
            conns = stats[pool_name][name]["server_connections"]
            if conns != 1:
                fail("%s pool holds %d connections to %s, expected 1" % (pool_name, conns, name))
    print("%d concurrent clients per protocol multiplexed on one connection per node" % CLIENTS, flush=True)

    # Placement, asked of each node directly.
    direct = {i: {"memcache": nodes[i]["memcache"], "redis": nodes[i]["redis"]} for i in nodes}
    mheld = {i: memcache_keys_on(direct[i], mkeys) for i in nodes}
    rheld = {i: redis_keys_on(direct[i], rkeys) for i in nodes}
    for what, held, keys in (("memcache", mheld, mkeys), ("redis", rheld, rkeys)):
        if sum(len(h) for h in held.values()) != len(keys) or set().union(*held.values()) != set(keys):
            fail("%s keys are not each on exactly one node: %s" % (what, {i: len(h) for i, h in held.items()}))
        for i, h in held.items():
            share = len(h) / len(keys)
            if share == 0 or share > 0.60:
                fail("%s: node %d holds %.1f%% of the keys (want >0%%, <=60%%): %s"
                     % (what, i, 100 * share, {j: len(x) for j, x in held.items()}))
    print("shares memcache %s redis %s" % ({i: len(h) for i, h in mheld.items()},
                                           {i: len(h) for i, h in rheld.items()}), flush=True)
    # status reports each node's key count (one store per node for both protocols).
    st = cluster.status()
    for n in st["nodes"]:
        want = len(mheld[n["index"]]) + len(rheld[n["index"]])
        if n["keys"] != want or n["curr_items"] != want or not n["alive"]:
            fail("status for node %d: %r, expected %d keys" % (n["index"], n, want))
    # Both pools name the nodes alike, so a key maps to the same node in both.
    sample = rkeys[:50]
    if mc.get_many(sample) != {k: rval[k] for k in sample}:
        fail("keys written through the redis pool are not readable through the memcache pool")

    # ---- node VICTIM dies
    cluster.kill(VICTIM)
    m_victim, r_victim = sorted(mheld[VICTIM]), sorted(rheld[VICTIM])
    m_others = [k for k in mkeys if k not in mheld[VICTIM]]
    r_others = [k for k in rkeys if k not in rheld[VICTIM]]
    errors = 0
    deadline = time.monotonic() + WAIT
    while True:
        # Requests for the dead node's keys make the proxy notice the failures.
        for k in m_victim[:5]:
            try:
                mc.get(k)
            except Exception:  # SERVER_ERROR from the proxy: expected while it tries the dead node
                errors += 1
        for k in r_victim[:5]:
            try:
                rc.get(k)
            except redis.exceptions.ResponseError:
                errors += 1
        ejects = {p: pool_stats(cluster, p).get("server_ejects", 0) for p in ("memcache", "redis")}
        if all(v > 0 for v in ejects.values()):
            break
        if time.monotonic() > deadline:
            fail("the proxy did not eject node %d within %.0f s: ejects %r" % (VICTIM, WAIT, ejects))
        time.sleep(0.2)
    print("node %d killed: ejected by the proxy in both pools (%d errors on its keys meanwhile)"
          % (VICTIM, errors), flush=True)

    # The other nodes' keys are all still served.
    got = {}
    for part in chunks(m_others, 100):
        got.update(mc.get_many(part))
    if got != {k: mval[k] for k in m_others}:
        fail("with node %d dead, %d of the other nodes' memcache keys are not served"
             % (VICTIM, sum(1 for k in m_others if got.get(k) != mval[k])))
    for part in chunks(r_others, 100):
        if rc.mget(part) != [rval[k] for k in part]:
            fail("with node %d dead, the other nodes' redis keys are not all served" % VICTIM)
    # The dead node's keys re-hash to live nodes: writing them succeeds (retry
    # through the proxy's periodic retries of the dead node).
    moved = r_victim[:100]
    for k in moved:
        for attempt in range(50):
            try:
                rc.set(k, b"moved")
                break
            except redis.exceptions.ResponseError:
                time.sleep(0.1)
        else:
            fail("cannot write %s through the proxy while node %d is dead" % (k, VICTIM))
    live = set().union(*(redis_keys_on(direct[i], moved) for i in nodes if i != VICTIM))
    if live != set(moved):
        fail("keys of the dead node did not move to live nodes: %d of %d" % (len(live), len(moved)))
    print("other nodes' keys served; %d of the dead node's keys re-hashed to live nodes" % len(moved),
          flush=True)

    # ---- node VICTIM comes back (same ports, same data dir if any)
    cluster.run("start", str(VICTIM))
    cluster.note_nodes()
    vnode = direct[VICTIM]
    probe = r_victim[100:200] or r_victim
    deadline = time.monotonic() + WAIT
    while True:
        # After server_retry_timeout the proxy tries the node again.
        for k in probe:
            try:
                rc.set(k, b"back")
            except redis.exceptions.ResponseError:
                pass
        direct_values = redis.Redis(host=vnode["redis"][0], port=vnode["redis"][1], socket_timeout=10).mget(probe)
        if direct_values == [b"back"] * len(probe):
            break
        if time.monotonic() > deadline:
            fail("node %d did not rejoin: writes of its keys do not reach it" % VICTIM)
        time.sleep(0.3)
    mprobe = m_victim[:100]
    deadline = time.monotonic() + WAIT
    while True:
        for k in mprobe:
            try:
                mc.set(k, b"back", noreply=False)
            except Exception:  # SERVER_ERROR until the memcache pool retries the node
                pass
        c = MemcacheClient(vnode["memcache"], timeout=10, connect_timeout=10)
        direct_values = c.get_many(mprobe)
        c.close()
        if direct_values == {k: b"back" for k in mprobe}:
            break
        if time.monotonic() > deadline:
            fail("node %d rejoined the redis pool but not the memcache pool" % VICTIM)
        time.sleep(0.3)
    print("node %d rejoined both pools" % VICTIM, flush=True)
    kept = redis_keys_on(vnode, r_victim[200:])
    if has_data_dir:
        if kept != set(r_victim[200:]):
            fail("node %d restarted with its data dir but lost %d keys" % (VICTIM, len(r_victim[200:]) - len(kept)))
        values = rc.mget(r_victim[200:300]) if r_victim[200:300] else []
        if values != [rval[k] for k in r_victim[200:300]]:
            fail("node %d's keys do not come back through the proxy" % VICTIM)
        print("node %d rejoined with its data dir: its keys are back" % VICTIM, flush=True)
    else:
        if kept:
            fail("node %d restarted without a data dir yet holds %d old keys" % (VICTIM, len(kept)))
        print("node %d rejoined (kv has no --data-dir: it came back empty, as a cache)" % VICTIM, flush=True)
    # The other nodes' keys are unaffected by the return.
    sample = m_others[:500]
    if mc.get_many(sample) != {k: mval[k] for k in sample}:
        fail("after node %d rejoined, other nodes' memcache keys are not served" % VICTIM)
    sample = r_others[:500]
    if rc.mget(sample) != [rval[k] for k in sample]:
        fail("after node %d rejoined, other nodes' redis keys are not served" % VICTIM)
    mc.close()
    rc.close()


if __name__ == "__main__":
    sys.exit(main())

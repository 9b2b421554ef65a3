#!/usr/bin/env python3
"""Integration test of apps/echo: start it with two shards on a free port,
wait until both shards listen, check echoes from several connections, then
SIGTERM it and expect exit status 0 within a second, with open connections
closed by the server."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def main():
    echo = sys.argv[1]
    port = testlib.free_port()
    args = [echo, "--smp", "2", "--port", str(port)]
    if (os.cpu_count() or 1) < 2:
        args.append("--overprovisioned")
    # Ready once both shards logged that they listen.
    server = testlib.Server(args, ready=f"listening on 127.0.0.1:{port}", ready_count=2, timeout=20)
    try:
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        for i, c in enumerate(conns):
            msg = f"message {i} ".encode() * (i + 1)
            c.sendall(msg)
            assert recv_exactly(c, len(msg)) == msg, f"connection {i}: wrong echo"
        big = os.urandom(1 << 20)
        conns[0].sendall(big)
        assert recv_exactly(conns[0], len(big)) == big, "1 MiB echo differs"

        start = time.monotonic()
        server.stop_ok(timeout=1.0)
        elapsed = time.monotonic() - start
        for i, c in enumerate(conns):
            c.settimeout(5)
            try:
                assert c.recv(1) == b"", f"connection {i} got data after the stop"
            except ConnectionResetError:
                pass  # closed by the server, as wanted
        print(f"ok: echo on port {port}, 2 shards, exit 0 after SIGTERM in {elapsed:.3f} s")
    finally:
        server.kill()


if __name__ == "__main__":
    main()

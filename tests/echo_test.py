#!/usr/bin/env python3
"""Integration test of apps/echo: start it with two shards on a free port,
wait until both shards listen, check echoes from several connections, then
SIGTERM it and expect exit status 0 within a second, with open connections
closed by the server."""
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = free_port()
    args = [echo, "--smp", "2", "--port", str(port)]
    if (os.cpu_count() or 1) < 2:
        args.append("--overprovisioned")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        # A thread reads the log: select() on the pipe would miss a line that
        # the buffered reader already took in with the one before it (both
        # shards log at once), which made this test hang now and then.
        lines = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True)
        reader.start()
        want = f"listening on 127.0.0.1:{port}"
        seen, log = 0, []
        deadline = time.monotonic() + 20
        while seen < 2:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"echo did not report two listening shards: {log}")
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            log.append(line.rstrip())
            if want in line:
                seen += 1

        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        for i, c in enumerate(conns):
            msg = f"message {i} ".encode() * (i + 1)
            c.sendall(msg)
            assert recv_exactly(c, len(msg)) == msg, f"connection {i}: wrong echo"
        big = os.urandom(1 << 20)
        conns[0].sendall(big)
        assert recv_exactly(conns[0], len(big)) == big, "1 MiB echo differs"

        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            raise AssertionError("echo did not exit within a second of SIGTERM")
        elapsed = time.monotonic() - start
        reader.join(timeout=5)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        assert status == 0, f"echo exited with {status}: {''.join(rest)}"
        for i, c in enumerate(conns):
            c.settimeout(5)
            try:
                assert c.recv(1) == b"", f"connection {i} got data after the stop"
            except ConnectionResetError:
                pass  # closed by the server, as wanted
        print(f"ok: echo on port {port}, 2 shards, exit 0 after SIGTERM in {elapsed:.3f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Integration test of the skeleton app: start it with two shards on a free
port, check INCR and TOTAL from several connections (spread over both shards
by the kernel), pipelining, errors, then SIGTERM with connections still open
and expect exit status 0. Also: a taken port gives exit 2 and one line.
Usage: skeleton_test.py PATH_TO_BINARY"""
import os
import select
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def ask(self, *lines):
        """Sends the lines in one write (pipelined), returns the reply lines."""
        self.sock.sendall(b"".join(l.encode() + b"\n" for l in lines))
        replies = []
        for _ in lines:
            reply = self.file.readline()
            assert reply.endswith(b"\n"), f"connection closed after {replies}"
            replies.append(reply.decode().rstrip("\n"))
        return replies


def start(binary, port):
    args = [binary, "--smp", "2", "--port", str(port)]
    if len(os.sched_getaffinity(0)) < 2:
        args.append("--overprovisioned")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    want = f"listening on 127.0.0.1:{port}"
    lines = []
    deadline = time.monotonic() + 30
    while True:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"{binary} did not report '{want}': {lines}")
        if select.select([proc.stderr], [], [], 0.5)[0]:
            line = proc.stderr.readline()
            lines.append(line.rstrip())
            if want in line:
                return proc


def main():
    binary = sys.argv[1]
    port = free_port()
    proc = start(binary, port)
    try:
        # Eight connections: with two shards, the kernel puts some on each
        # (all on one has odds 1/128), so increments cross shards both ways.
        clients = [client(port) for _ in range(8)]
        names = [f"name{i}" for i in range(20)]
        expected = {}
        for round_ in range(3):
            for i, c in enumerate(clients):
                for name in names[i::2]:
                    expected[name] = expected.get(name, 0) + 1
                    # The value is the same whichever shard the connection is
                    # on: each counter lives on exactly one owner shard.
                    assert c.ask(f"INCR {name}") == [str(expected[name])], (round_, i, name)
        total = sum(expected.values())
        for c in clients:
            assert c.ask("TOTAL") == [str(total)], "TOTAL must sum every shard's counters"

        # Pipelined requests, \r\n line ends, and errors, in order.
        replies = clients[0].ask("INCR name0\r", "TOTAL", "GET name0", "INCR", "", "total")
        assert replies == [str(expected["name0"] + 1), str(total + 1), "ERROR unknown command",
                           "ERROR unknown command", "ERROR unknown command",
                           "ERROR unknown command"], replies

        # A line past the limit ends that connection, not the server.
        try:
            clients[1].sock.sendall(b"INCR " + b"x" * 100000 + b"\n")
            assert clients[1].file.readline() == b"", "an oversized line must close the connection"
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed with our bytes unread: a reset, as good as EOF
        assert clients[2].ask("TOTAL") == [str(total + 1)]

        # SIGTERM with connections still open: they are closed, exit 0.
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError("no exit after SIGTERM")
        assert status == 0, f"exit status {status} after SIGTERM: {proc.stderr.read()}"
        for c in clients[2:]:
            try:
                assert c.file.readline() == b"", "a connection got data after the stop"
            except ConnectionResetError:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # A taken port: one clear line and exit status 2, not a crash.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run([binary, "--smp", "1", "--port", str(busy)], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert str(busy) in result.stderr, result.stderr
    print(f"ok: {os.path.basename(binary)} on port {port}: INCR/TOTAL over 2 shards, exit 0 after SIGTERM")


if __name__ == "__main__":
    main()

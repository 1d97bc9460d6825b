"""A load balancer's health check, for bench/run.py's 10,000-stream scenario: `GET /health` on a
new connection every N ms until its standard input closes (or a line arrives on it), then one
line of JSON on standard output: `{"probes": [[monotonic ns at the start, ms or null, what
went wrong or null, ms to connect or null], ...]}`. The connect alone (the kernel's handshake)
is slow only when the server's accept queue is full; the rest is the server's event loop.

A process of its own, so that the time it measures is the server's answer and not a wait for
the harness's event loop, which is busy with the streams' sockets. Each probe is blocking:
connect, send (`Connection: close`), read until the server closes; one that takes longer than
the interval delays the next (they never overlap), so a stalled server shows as one long probe.
The times are the system-wide monotonic clock's, which the harness reads too.

    python bench/healthprobe.py --port 5282 --interval-ms 100
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time

HOST = "127.0.0.1"  # loopback only


def probe(port: int, path: str, timeout: float) -> tuple[float, str | None, float | None]:
    """One `GET path` on a new connection: milliseconds to the whole answer (or to the
    failure), what went wrong (None: a 200), and milliseconds to connect (None: it failed)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n").encode()
    t0 = time.monotonic_ns()
    connect_ms = None
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            connect_ms = (time.monotonic_ns() - t0) / 1e6
            sock.sendall(request)
            head = b""
            for _ in range(10_000):  # bounded: a /health answer is a few hundred bytes
                data = sock.recv(65536)
                if not data:
                    break
                head += data
    except OSError as exc:
        return (time.monotonic_ns() - t0) / 1e6, type(exc).__name__, connect_ms
    ms = (time.monotonic_ns() - t0) / 1e6
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        return ms, f"HTTP {status[0].decode(errors='replace') if status else '?'}", connect_ms
    return ms, None, connect_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="probe /health until stdin closes")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/health")
    parser.add_argument("--interval-ms", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds, per probe")
    args = parser.parse_args(argv)
    interval = args.interval_ms / 1000
    stdin = sys.stdin.fileno()
    probes: list[tuple[int, float | None, str | None, float | None]] = []
    due = time.monotonic()
    while True:  # until the harness closes our standard input (or writes a line to it)
        wait = max(0.0, due - time.monotonic())
        ready, _, _ = select.select([stdin], [], [], wait)
        if ready:
            os.read(stdin, 4096)
            break
        start = time.monotonic_ns()
        ms, error, connect_ms = probe(args.port, args.path, args.timeout)
        probes.append((start, ms if error is None else None, error, connect_ms))
        due = max(due + interval, time.monotonic())  # no burst to catch up after a slow one
    json.dump({"probes": probes}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

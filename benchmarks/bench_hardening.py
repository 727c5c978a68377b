"""API latency of a node under connection abuse, against its own idle baseline in the same run (issue 16).

    PYTHONPATH=. python -m benchmarks.bench_hardening [--fds 4096] [--loris 3000] [--json]

Starts one regtest node as a child process with RLIMIT_NOFILE = --fds, then measures `GET /api/v1/status`
(a fresh connection each time, from 127.0.0.1) in four phases: idle; while --loris partial requests from
60 other loopback addresses are held open; while 40 clients post 8 MB bodies that are refused; while 300
websockets that never finish the p2p handshake are open. Reports p50 / p99 / max per phase, their ratio to
the idle p99, the node's open fds and resident memory, and the bytes its log grew. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CHILD = r"""
import asyncio, resource, sys, logging
n = int(sys.argv[3]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pathlib import Path
from node.server.node import Node, NodeConfig
node = Node(NodeConfig(datadir=Path(sys.argv[1]), network="regtest", port=int(sys.argv[2])))
asyncio.run(node.run_forever())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port: int) -> float:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        resp = b""
        while chunk := c.recv(65536):
            resp += chunk
    if not resp.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(resp[:200])
    return time.perf_counter() - t0


def _measure(port: int, n: int) -> dict:
    lat = sorted(_status(port) for _ in range(n))
    return {
        "p50_ms": round(1000 * statistics.median(lat), 2),
        "p99_ms": round(1000 * lat[int(0.99 * (n - 1))], 2),
        "max_ms": round(1000 * lat[-1], 2),
        "n": n,
    }


def _proc(pid: int) -> dict:
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return {"open_fds": len(os.listdir(f"/proc/{pid}/fd")), "rss_mb": round(rss / 2**20, 1)}


def main_args(args: argparse.Namespace) -> int:
    d = tempfile.mkdtemp(prefix="bench-hardening-")
    port = _free_port()
    logp = os.path.join(d, "node.log")
    logf = open(logp, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, os.path.join(d, "n"), str(port), str(args.fds)],
        stdout=logf,
        stderr=subprocess.STDOUT,
    )
    out: dict = {"fds": args.fds, "loris": args.loris, "phases": {}}
    held: list[socket.socket] = []
    try:
        end = time.monotonic() + 120
        while True:
            try:
                _status(port)
                break
            except (OSError, RuntimeError):
                if proc.poll() is not None or time.monotonic() > end:
                    raise SystemExit(open(logp).read()[-2000:]) from None
                time.sleep(0.3)
        n = args.samples
        out["phases"]["idle"] = _measure(port, n) | _proc(proc.pid)
        log0 = os.path.getsize(logp)
        # 1. slow-loris: partial request heads from 60 addresses, held open
        for i in range(args.loris):
            try:
                s = socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=(f"127.0.2.{1 + i % 60}", 0)
                )
                s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                held.append(s)
            except OSError:
                pass
        out["phases"]["slow_loris"] = _measure(port, n) | _proc(proc.pid)
        for s in held:
            s.close()
        held.clear()
        # 2. oversized bodies: 40 clients posting 8 MB to /api/v1/tx (refused with 413)
        stop = threading.Event()

        def poster(i: int) -> None:
            body = b"0" * (8 << 20)
            while not stop.is_set():
                try:
                    with socket.create_connection(
                        ("127.0.0.1", port), timeout=10, source_address=(f"127.0.3.{1 + i}", 0)
                    ) as c:
                        c.sendall(
                            b"POST /api/v1/tx HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body)
                        )
                        c.sendall(body)
                        c.recv(4096)
                except OSError:
                    pass

        ts = [threading.Thread(target=poster, args=(i,), daemon=True) for i in range(40)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        out["phases"]["big_bodies"] = _measure(port, n) | _proc(proc.pid)
        stop.set()
        for t in ts:
            t.join(15)
        # 3. websockets that never say hello
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        for i in range(300):
            try:
                s = socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=(f"127.0.4.{1 + i % 150}", 0)
                )
                s.sendall(
                    f"GET /p2p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                held.append(s)
            except OSError:
                pass
        out["phases"]["idle_websockets"] = _measure(port, n) | _proc(proc.pid)
        out["log_bytes_during_attacks"] = os.path.getsize(logp) - log0
        base = out["phases"]["idle"]["p99_ms"]
        for ph in out["phases"].values():
            ph["p99_ratio_to_idle"] = round(ph["p99_ms"] / base, 2) if base else None
    finally:
        for s in held:
            s.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
    if args.json:
        print(json.dumps(out))
    else:
        for name, ph in out["phases"].items():
            print(
                f"{name:16s} p50 {ph['p50_ms']:7.2f} ms  p99 {ph['p99_ms']:7.2f} ms  max {ph['max_ms']:7.2f} ms  "
                f"x{ph['p99_ratio_to_idle']}  fds {ph['open_fds']}  rss {ph['rss_mb']} MB"
            )
        print(f"log grew {out['log_bytes_during_attacks']} bytes during the attacks")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fds", type=int, default=4096)
    ap.add_argument("--loris", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    return main_args(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

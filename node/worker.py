"""Mining work shared by the in-node miner and remote workers (`pouw miner --node URL`).

Work rate (one definition everywhere): the multiply-adds (m·k·n) of the filler jobs whose noisy GEMM and
transcript were completed, summed over the last `WINDOW_S` seconds, divided by the window (or by the
time since the first job when that is shorter). The node's `work_rate` is its own miner's rate plus the
rates its remote workers report with each work request; a worker prints the same figure it reports.

Remote worker protocol (getblocktemplate pattern, JSON over the node's HTTP API):
``POST /api/v1/mining/work {"address", "worker", "work_rate"}`` returns a template (header without job
and proof, hex of its canonical encoding, plus `template_id`); the worker mines the filler job of that
header (`chain.mining.filler_job`) under nonces of its choosing (a random start, then +1), and posts a winning header to
``POST /api/v1/mining/submit {"template_id", "header"}``. It asks for new work every second and after
each found block, so it follows the node's tip.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from typing import Callable

from chain.block import Header
from chain.config import ChainConfig
from chain.mining import mine_filler_once

log = logging.getLogger("pouw.worker")

WINDOW_S = 60.0


class WorkRate:
    """MACs of mined jobs per second over a sliding window."""

    def __init__(self, window: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.start: float | None = clock()  # the rate counts from when mining started
        self.total_macs = 0
        self.jobs = 0

    def add(self, macs: int) -> None:
        now = self.clock()
        self.events.append((now, macs))
        self.total_macs += macs
        self.jobs += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.events and self.events[0][0] < now - self.window:
            self.events.popleft()

    def rate(self) -> float:
        now = self.clock()
        self._trim(now)
        span = min(self.window, max(now - self.start, 1e-3))
        return sum(m for _, m in self.events) / span


def mine_one(cfg: ChainConfig, params, backend, header: Header, nonce: int) -> tuple[Header | None, int]:
    """One attempt at `header`'s filler job under `nonce` (job/nonce/proof replaced). Returns (header with
    proof or None, job MACs). Blocking: run it in a worker thread."""
    return mine_filler_once(cfg, params=params, backend=backend, header=header, nonce=nonce)


class Device:
    """A compute device with fault handling: any backend exception is counted; the device is retried
    after an exponential back-off (1, 2, 4 … 60 s) and dropped after `max_failures` consecutive faults."""

    def __init__(self, spec: str, max_failures: int = 5, clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self.max_failures = max_failures
        self.clock = clock
        self.backend = None
        self.failures = 0
        self.total_faults = 0
        self.retry_at = 0.0
        self.dropped = False
        self.last_error = ""

    def get(self):
        """The backend (created lazily); raises on a device that cannot be opened."""
        if self.backend is None:
            from kernels import get_backend
            self.backend = get_backend(self.spec)
        return self.backend

    def ready(self) -> bool:
        return not self.dropped and self.clock() >= self.retry_at

    def ok(self) -> None:
        self.failures = 0

    def fault(self, err: BaseException) -> None:
        self.failures += 1
        self.total_faults += 1
        self.last_error = f"{type(err).__name__}: {err}"
        self.backend = None  # re-create on retry (a CUDA context may be unusable)
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
        if self.failures >= self.max_failures:
            self.dropped = True
            log.error("device %s dropped after %d consecutive faults (last: %s)", self.spec, self.failures,
                      self.last_error)
        else:
            delay = min(60.0, 2.0 ** (self.failures - 1))
            self.retry_at = self.clock() + delay
            log.warning("device %s fault %d (%s); retrying in %.0f s", self.spec, self.failures, self.last_error, delay)

    @property
    def state(self) -> str:
        return "dropped" if self.dropped else ("backoff" if not self.ready() else "ok")


# --- remote worker ------------------------------------------------------------------------------------

class NodeClient:
    """Tiny JSON client for the node's HTTP API (stdlib only)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                doc = json.loads(e.read())
            except Exception:
                doc = {"error": {"code": "http-%d" % e.code, "message": str(e)}}
            raise ApiError(doc.get("error", {}).get("code", "error"), doc.get("error", {}).get("message", "")) from None


class ApiError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def run_remote(url: str, device: str, address: str, *, max_blocks: int = 0, duration: float = 0.0,
               report_every: float = 10.0) -> int:
    """Mine for the node at `url` until Ctrl-C (or max_blocks found / duration elapsed). Returns found."""
    from chain.config import parse_config
    client = NodeClient(url)
    worker_id = os.urandom(4).hex()
    dev = Device(device)
    rate = WorkRate()
    cfg_cache: dict[str, ChainConfig] = {}
    found = 0
    t_start = time.monotonic()
    last_report = t_start
    work = None
    work_at = 0.0
    extra = random.getrandbits(40)
    log.info("worker %s mining for %s on %s, rewards to %s", worker_id, url, device, address or "(node's address)")
    while True:
        now = time.monotonic()
        if (max_blocks and found >= max_blocks) or (duration and now - t_start >= duration):
            break
        if work is None or now - work_at >= 1.0:
            try:
                new = client.call("POST", "/api/v1/mining/work",
                                  {"address": address, "worker": worker_id, "work_rate": rate.rate(),
                                   "device": device})
            except (OSError, ApiError) as e:
                log.warning("cannot get work from %s: %s; retrying", url, e)
                time.sleep(2.0)
                continue
            if work is None or new["template_id"] != work["template_id"]:
                extra = random.getrandbits(40)
            work, work_at = new, now
            if work["network"] not in cfg_cache:
                cfg_cache.clear()
                cfg_cache[work["network"]] = parse_config(client.call("GET", "/api/v1/network")["config_toml"])
        cfg = cfg_cache[work["network"]]
        if dev.dropped:
            log.error("device dropped; worker stops")
            return found
        if not dev.ready():
            time.sleep(0.2)
            continue
        header = Header.decode(bytes.fromhex(work["header"]))
        try:
            got, macs = mine_one(cfg, cfg.pow.params(), dev.get(), header, extra)
            dev.ok()
        except Exception as e:  # any backend error is a device fault
            dev.fault(e)
            continue
        extra += 1
        rate.add(macs)
        if got is not None:
            try:
                res = client.call("POST", "/api/v1/mining/submit",
                                  {"template_id": work["template_id"], "header": got.encoded.hex(), "worker": worker_id})
                log.info("block %d %s submitted: %s", got.height, got.hash.hex()[:16], res.get("result"))
                found += res.get("result") == "accepted"
            except (OSError, ApiError) as e:
                log.warning("submit failed: %s", e)
            work = None
        if time.monotonic() - last_report >= report_every:
            last_report = time.monotonic()
            log.info("work rate %.3f GMAC/s (%d jobs, %d blocks found)", rate.rate() / 1e9, rate.jobs, found)
    log.info("worker done: %d blocks, work rate %.3f GMAC/s", found, rate.rate() / 1e9)
    return found

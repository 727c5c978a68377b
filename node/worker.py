"""Mining work shared by the in-node miner and remote workers (`pouw miner --node URL`).

Attempts (`FillerMiner`): a filler job's operands A, B and their Merkle commitments are built once per
operand seed and reused by every following attempt on the same seed; an attempt redoes only the noise, the
GEMM with its transcript, the tickets and (for a winner) the proof. Attempts run in batches
(`FillerMiner.run`) inside the mining thread, so the event loop is visited once per batch, not once per pass.

Work rate (one definition everywhere): the multiply-adds (m·k·n) of the jobs whose noisy GEMM and
transcript were completed, summed over the last `WINDOW_S` seconds, divided by the window (or by the
time since the first job when that is shorter). The node's `work_rate` is its own miner's rate plus the
rates its remote workers report with each work request; a worker prints the same figure it reports.

Remote worker protocol (getblocktemplate pattern, JSON over the node's HTTP API):
``POST /api/v1/mining/work {"address", "worker", "work_rate"}`` returns a template (header without job
and proof, hex of its canonical encoding, plus `template_id` and the node's `filler` shape); the worker
mines the filler job of that header (`chain.mining.filler_seed`) under nonces of its choosing (a random
start, then +1) with `FillerMiner`, and posts a winning header to
``POST /api/v1/mining/submit {"template_id", "header"}``. It asks for new work every second and after
each found block, so it follows the node's tip.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Callable

from chain.block import Header
from chain.config import ChainConfig
from chain.mining import NONCE_MAX, filler_seed, mine_filler_once
from node.logfmt import event

if TYPE_CHECKING:
    from kernels.base import Backend

log = logging.getLogger("pouw.worker")

WINDOW_S = 60.0


class WorkRate:
    """MACs of mined jobs per second over a sliding window. Thread-safe: the mining thread adds each
    attempt as it completes while the event loop reads the rate."""

    def __init__(self, window: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.start: float | None = clock()  # the rate counts from when mining started
        self.total_macs = 0
        self.jobs = 0
        self._lock = threading.Lock()

    def add(self, macs: int) -> None:
        with self._lock:
            now = self.clock()
            self.events.append((now, macs))
            self.total_macs += macs
            self.jobs += 1
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self.events and self.events[0][0] < now - self.window:
            self.events.popleft()

    def rate(self) -> float:
        with self._lock:
            now = self.clock()
            self._trim(now)
            span = min(self.window, max(now - self.start, 1e-3))
            return sum(m for _, m in self.events) / span


def parse_shape(text: str) -> tuple[int, int, int]:
    """'MxKxN' -> (m, k, n)."""
    try:
        m, k, n = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r} is not MxKxN") from None
    return m, k, n


def check_filler_shape(cfg: ChainConfig, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """`shape` if blocks mined on it pass the chain's job-shape rules, else ValueError."""
    from chain.errors import BlockError
    from chain.validation import check_job_shape
    m, k, n = shape
    try:
        check_job_shape(cfg, m, k, n)
    except BlockError as e:
        raise ValueError(f"filler shape {m}x{k}x{n} outside the chain's limits ({e.reason}: {e.detail})") from None
    return m, k, n


class FillerMiner:
    """Filler mining on one shape. The operands and commitments of the last filler seed are kept, and the
    seed (`chain.mining.filler_seed`) leaves out the nonce, timestamp and transactions, so every attempt and
    every template refresh at one height builds them once; an attempt is then noise + GEMM + transcript +
    tickets. Not thread-safe: one mining thread uses it."""

    def __init__(self, cfg: ChainConfig, params, shape: tuple[int, int, int] | None = None):
        self.cfg = cfg
        self.params = params
        self.shape = check_filler_shape(cfg, tuple(shape or cfg.pow.filler_shape))
        self._seed: bytes | None = None
        self._prep = None
        self.builds = 0        # operand sets built (A, B, their Merkle trees)
        self.attempts = 0

    @property
    def macs(self) -> int:
        m, k, n = self.shape
        return m * k * n

    def prepared(self, header: Header):
        """The PreparedJob of `header`'s filler operands, built only when its filler seed changed."""
        seed = filler_seed(header)
        if seed != self._seed:
            from pouw.miner import filler_operands, prepare_job
            self._prep = None                  # the old trees go before the new ones are built
            a, b = filler_operands(seed, self.shape)
            self._prep = prepare_job(a, b, self.params)
            self._seed = seed
            self.builds += 1
        return self._prep

    def attempt(self, backend, header: Header, nonce: int) -> Header | None:
        """One attempt: `header` with its filler job under `nonce`, mined once; the header with a proof or None."""
        found, _ = mine_filler_once(self.cfg, header, self.params, backend, nonce & NONCE_MAX,
                                    prepared=self.prepared(header))
        self.attempts += 1
        return found

    def run(self, backend, header: Header, nonce: int, *, budget_s: float = 0.25,
            stop: Callable[[], bool] = lambda: False,
            on_attempt: Callable[[int], None] = lambda macs: None) -> tuple[Header | None, int]:
        """Attempts at nonce, nonce + 1, ... (mod 2^64) until one wins, `stop()` is true or `budget_s` has
        passed (at least one attempt). Calls on_attempt(macs) after each. Returns (winning header or None,
        the next nonce). Blocking: run it in the mining thread."""
        end = time.monotonic() + budget_s
        while True:
            found = self.attempt(backend, header, nonce)
            nonce = (nonce + 1) & NONCE_MAX
            on_attempt(self.macs)
            if found is not None or stop() or time.monotonic() >= end:
                return found, nonce


class Device:
    """A compute device with fault handling: any backend exception is counted; the device is retried
    after an exponential back-off (1, 2, 4 … 60 s) and dropped after `max_failures` consecutive faults."""

    def __init__(self, spec: str, max_failures: int = 5, clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self.max_failures = max_failures
        self.clock = clock
        self.backend: Backend | None = None
        self.failures = 0
        self.total_faults = 0
        self.retry_at = 0.0
        self.dropped = False
        self.last_error = ""

    def get(self) -> Backend:
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
        headers = {"Content-Type": "application/json"} if data else {}
        if os.environ.get("POUW_API_TOKEN") and method not in ("GET", "HEAD"):  # docs/operations.md
            headers["Authorization"] = "Bearer " + os.environ["POUW_API_TOKEN"]
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
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
               report_every: float = 10.0, filler_shape: tuple[int, int, int] | None = None,
               stop: threading.Event | None = None, on_block: Callable[[], None] = lambda: None,
               max_failures: int = 5) -> int:
    """Mine for the node at `url` until Ctrl-C (or max_blocks found / duration elapsed / `stop` set). Returns found.
    The filler shape is `filler_shape`, else the one the node advertises with its work. on_block() is called
    after each accepted block; the device is dropped (and the worker stops) after max_failures faults in a row."""
    from chain.config import parse_config
    client = NodeClient(url)
    worker_id = os.urandom(4).hex()
    dev = Device(device, max_failures=max_failures)
    stop = stop or threading.Event()
    rate = WorkRate()
    cfg_cache: dict[str, ChainConfig] = {}
    filler: FillerMiner | None = None
    found = 0
    t_start = time.monotonic()
    last_report = t_start
    work = None
    work_at = 0.0
    nonce = random.getrandbits(64)
    log.info("worker %s mining for %s on %s, rewards to %s", worker_id, url, device, address or "(node's address)")
    while True:
        now = time.monotonic()
        if (max_blocks and found >= max_blocks) or (duration and now - t_start >= duration) or stop.is_set():
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
                nonce = random.getrandbits(64)
            work, work_at = new, now
            if work["network"] not in cfg_cache:
                cfg_cache.clear()
                cfg_cache[work["network"]] = parse_config(client.call("GET", "/api/v1/network")["config_toml"])
                filler = None
        cfg = cfg_cache[work["network"]]
        if filler is None:
            try:
                filler = FillerMiner(cfg, cfg.pow.params(), filler_shape or tuple(work.get("filler") or ()) or None)
            except ValueError as e:
                log.error("%s; worker stops", e)
                return found
            log.info("filler shape %dx%dx%d", *filler.shape)
        if dev.dropped:
            log.error("device dropped; worker stops")
            return found
        if not dev.ready():
            time.sleep(0.2)
            continue
        header = Header.decode(bytes.fromhex(work["header"]))
        left = max(0.0, 1.0 - (time.monotonic() - work_at))
        if duration:
            left = min(left, max(0.0, duration - (time.monotonic() - t_start)))
        try:
            got, nonce = filler.run(dev.get(), header, nonce, budget_s=left, on_attempt=rate.add, stop=stop.is_set)
            dev.ok()
        except Exception as e:  # any backend error is a device fault
            dev.fault(e)
            continue
        if got is not None:
            try:
                res = client.call("POST", "/api/v1/mining/submit",
                                  {"template_id": work["template_id"], "header": got.encoded.hex(), "worker": worker_id})
                event(log, logging.INFO, "found block", height=got.height, hash=got.hash.hex()[:16],
                      result=res.get("result"), device=device)
                if res.get("result") == "accepted":
                    found += 1
                    on_block()
            except (OSError, ApiError) as e:
                log.warning("submit failed: %s", e)
            work = None
        if time.monotonic() - last_report >= report_every:
            last_report = time.monotonic()
            event(log, logging.INFO, "work rate", device=device, gmacs_per_s=round(rate.rate() / 1e9, 3),
                  attempts=rate.jobs, operand_builds=filler.builds, blocks_found=found)
    log.info("worker on %s done: %d blocks, work rate %.3f GMAC/s", device, found, rate.rate() / 1e9)
    return found


def run_remote_devices(url: str, devices: list[str], address: str, *, max_blocks: int = 0, **kw) -> int:
    """`run_remote` on several devices at once (`pouw miner --device cuda:0,cuda:1` or `cuda:all`): one worker
    thread per device, each with its own worker id, work rate (reported to the node, which sums them) and fault
    handling, so a faulty device is dropped alone and the others keep mining. max_blocks counts the blocks of all
    devices together. Returns the blocks found by all."""
    if len(devices) == 1:
        return run_remote(url, devices[0], address, max_blocks=max_blocks, **kw)
    stop = threading.Event()
    lock = threading.Lock()
    total = [0]
    found: dict[str, int] = {}

    def on_block() -> None:
        with lock:
            total[0] += 1
            if max_blocks and total[0] >= max_blocks:
                stop.set()

    def work(device: str) -> None:
        try:
            found[device] = run_remote(url, device, address, stop=stop, on_block=on_block, **kw)
        except Exception:  # a worker's own bug: log it, the other devices go on
            log.exception("worker on %s failed", device)
            found[device] = 0

    threads = [threading.Thread(target=work, args=(d,), name=f"pouw-worker-{d}") for d in devices]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.5)
    except KeyboardInterrupt:
        log.info("stopping the workers on %s", ", ".join(devices))
        stop.set()
        for t in threads:
            t.join()
    log.info("workers done: %s", ", ".join(f"{d} {found.get(d, 0)} blocks" for d in devices))
    return sum(found.values())

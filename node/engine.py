"""The mining engine shared by the node's miner (node.server.miner) and remote workers (node.client.worker): filler
attempts, one paid-job pass, the compute device with its fault handling, and the work rate.

Attempts (`FillerMiner`): a filler job's operands A, B and their Merkle commitments are built once per
operand seed and reused by every following attempt on the same seed; an attempt redoes only the noise, the
GEMM with its transcript, the tickets and (for a winner) the proof. Attempts run in batches
(`FillerMiner.run`) inside the mining thread, so the event loop is visited once per batch, not once per pass.

Paid pass (`mine_paid`): the header's job is a client's commitment; the same GEMM draws the lottery and yields
the exact C.

Work rate (one definition everywhere): the multiply-adds (m·k·n) of the jobs whose noisy GEMM and
transcript were completed, summed over the last `WINDOW_S` seconds, divided by the window (or by the
time since the first job when that is shorter). The node's `work_rate` is its own miner's rate plus the
rates its remote workers report with each work request; a worker prints the same figure it reports.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from chain.block import Header
from chain.config import ChainConfig
from chain.mining import NONCE_MAX, filler_seed, mine_filler_once
from node.logfmt import event

if TYPE_CHECKING:
    from kernels.base import Backend
    from pouw.miner import PreparedJob

log = logging.getLogger("pouw.worker")  # device faults: the name they always had (docs/operations.md)

WINDOW_S = 60.0


class WorkRate:
    """MACs of mined jobs per second over a sliding window. Thread-safe: the mining thread adds each
    attempt as it completes while the event loop reads the rate."""

    def __init__(self, window: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.start: float = clock()  # the rate counts from when mining started
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
        m, k, n = shape or cfg.pow.filler_shape
        self.shape = check_filler_shape(cfg, (m, k, n))
        self._seed: bytes | None = None
        self._prep: PreparedJob | None = None
        self.builds = 0  # operand sets built (A, B, their Merkle trees)
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

            self._prep = None  # the old trees go before the new ones are built
            a, b = filler_operands(seed, self.shape)
            self._prep = prepare_job(a, b, self.params)
            self._seed = seed
            self.builds += 1
        return self._prep

    def attempt(self, backend, header: Header, nonce: int, next_nonce: int | None = None) -> Header | None:
        """One attempt: `header` with its filler job under `nonce`, mined once; the header with a proof or None.
        next_nonce: the nonce tried next on this header; a pipelined backend (`Capabilities.async_pass`) stages
        that attempt's inputs meanwhile, and an attempt under another header (a new tip or template) drops them."""
        found, _ = mine_filler_once(
            self.cfg,
            header,
            self.params,
            backend,
            nonce & NONCE_MAX,
            prepared=self.prepared(header),
            next_nonce=next_nonce,
        )
        self.attempts += 1
        return found

    def run(
        self,
        backend,
        header: Header,
        nonce: int,
        *,
        budget_s: float = 0.25,
        stop: Callable[[], bool] = lambda: False,
        on_attempt: Callable[[int], None] = lambda macs: None,
    ) -> tuple[Header | None, int]:
        """Attempts at nonce, nonce + 1, ... (mod 2^64) until one wins, `stop()` is true or `budget_s` has
        passed (at least one attempt). Calls on_attempt(macs) after each. Returns (winning header or None,
        the next nonce). Blocking: run it in the mining thread. On a pipelined backend each attempt stages the
        next nonce's inputs, the last one's for the next batch, which takes them if its header is the same."""
        end = time.monotonic() + budget_s
        while True:
            nxt = (nonce + 1) & NONCE_MAX
            found = self.attempt(backend, header, nonce, next_nonce=nxt)
            nonce = nxt
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
            event(
                log,
                logging.ERROR,
                "device dropped after consecutive faults",
                device=self.spec,
                faults=self.failures,
                last=self.last_error,
            )
        else:
            delay = min(60.0, 2.0 ** (self.failures - 1))
            self.retry_at = self.clock() + delay
            event(
                log,
                logging.WARNING,
                "device fault; retrying",
                device=self.spec,
                faults=self.failures,
                why=self.last_error,
                retry_s=delay,
            )

    @property
    def state(self) -> str:
        return "dropped" if self.dropped else ("backoff" if not self.ready() else "ok")


def mine_paid(cfg, params, backend, header, prep):
    """One useful-work pass over a paid job: the header's job is the client's commitment. Returns
    (header with proof or None, MACs, exact C as a CPU int32 tensor, the pass's work certificate as
    (chain.tx.WorkCert, template height) or None). The certificate (this template and the pass's lowest
    ticket when it is a share, pouw.share) comes from the tickets the pass drew anyway: no extra pass.
    Blocking: run in a thread."""
    from chain.tx import WorkCert
    from pouw.miner import mine_job
    from pouw.share import best_share

    h = replace(header, job=prep.job, proof=b"")
    res = mine_job(
        h.template,
        prep.job,
        prep.a,
        prep.b,
        h.target,
        params,
        backend,
        prepared=prep,
        recover_c=True,
        max_proofs=1,
        stage_sync=False,
    )
    c = res.c.cpu().contiguous()
    share = best_share(res, prep, params)
    cert = (WorkCert(h.template, share.encode()), h.height) if share is not None else None
    return (h.with_proof(res.proofs[0].encode()) if res.proofs else None), prep.job.macs, c, cert

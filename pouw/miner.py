"""Mining one job: noise from the template, one noisy GEMM with the transcript fused in, tickets for every
tile, proofs for the winning tiles, and the client's exact C recovered from the same pass."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from kernels import get_backend
from kernels.base import MSG_WORDS, Backend, Capabilities
from pouw.commit import tree_a, tree_b
from pouw.errors import JobError
from pouw.hashing import xof
from pouw.job import JobCommitment, check_operands
from pouw.merkle import MerkleTree
from pouw.noise import derive_seeds
from pouw.noise_torch import Noise, full_noise, full_noise_on, noisy_operands
from pouw.params import PowParams
from pouw.proof import TileProof
from pouw.recover import correction_operands, recover, recovery_digits
from pouw.ticket import ticket_prefix, win_threshold, winning_tiles


@dataclass
class PreparedJob:
    """Checked operands with their Merkle trees; reusable across templates (the trees cost O(mk + kn)).
    Device copies of the operands are cached, so a GPU miner uploads a job once, not once per template."""

    a: torch.Tensor
    b: torch.Tensor
    job: JobCommitment
    tree_a: MerkleTree
    tree_b: MerkleTree
    _on: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    _staged: dict[str, _Staged] = field(default_factory=dict, repr=False)  # device -> the next attempt's inputs

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self.a, self.b
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.a.to(device), self.b.to(device))
        return self._on[key]


def prepare_job(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, params: PowParams) -> PreparedJob:
    ta, tb = check_operands(a, b)
    params.check_shape(ta.shape[0], ta.shape[1], tb.shape[1])
    t_a, t_b = tree_a(ta), tree_b(tb)
    job = JobCommitment(t_a.root, t_b.root, ta.shape[0], ta.shape[1], tb.shape[1])
    return PreparedJob(ta, tb, job, t_a, t_b)


@dataclass
class MiningResult:
    job_key: bytes
    c: torch.Tensor | None  # exact A·B (int32, on the backend's device), None if skipped
    tickets_t: torch.Tensor  # (m/h, n/w, 32) uint8, every tile's ticket, on the backend's device
    proofs: list[TileProof]  # winning tiles, lowest ticket first (at most max_proofs)
    winners: int  # number of winning tiles
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def tickets(self) -> np.ndarray:
        """Every tile's ticket as a host array (copied from the device on each access)."""
        return self.tickets_t.cpu().numpy()


def filler_operands(job_seed: bytes, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic operands in [-64, 63] for a filler job (mined when no client job is waiting)."""
    m, k, n = shape
    raw_a = np.frombuffer(xof(b"filler-a", job_seed, length=m * k), dtype=np.uint8)
    raw_b = np.frombuffer(xof(b"filler-b", job_seed, length=k * n), dtype=np.uint8)
    a = ((raw_a & 127).astype(np.int16) - 64).astype(np.int8).reshape(m, k)
    b = ((raw_b & 127).astype(np.int16) - 64).astype(np.int8).reshape(k, n)
    return torch.from_numpy(a), torch.from_numpy(b)


_scratch = threading.local()
SCRATCH_MAX_BYTES = 32 << 20  # larger buffers are not kept: a thread holds at most a few of these between passes


def _scratch_buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A CPU buffer of this thread, reused by the next pass of the same shape: A', B' and (when C is not kept)
    C' and the messages never leave mine_job, and fresh 16 MiB allocations cost ~4,000 page faults a pass.
    Buffers over SCRATCH_MAX_BYTES are allocated afresh each time, so an idle thread never pins much memory."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    t = bufs.get(name)
    if t is None or tuple(t.shape) != shape or t.dtype != dtype:
        bufs.pop(name, None)
        t = torch.empty(shape, dtype=dtype)
        if t.numel() * t.element_size() <= SCRATCH_MAX_BYTES:
            bufs[name] = t
    return t


def make_proof(prep: PreparedJob, job_key: bytes, ti: int, tj: int, ticket: bytes, params: PowParams) -> TileProof:
    h, w, k = params.tile_h, params.tile_w, prep.job.k
    a_rows = prep.a[ti * h : (ti + 1) * h].contiguous().numpy().tobytes()
    # the w columns as rows: gathered as a k x w block first, then transposed (4x faster than a strided transpose)
    b_cols = np.ascontiguousarray(prep.b.numpy()[:, tj * w : (tj + 1) * w]).T.copy().tobytes()
    return TileProof(
        job_key,
        ti,
        tj,
        h,
        w,
        k,
        ticket,
        a_rows,
        b_cols,
        tuple(prep.tree_a.open_range(ti * h, h)),
        tuple(prep.tree_b.open_range(tj * w, w)),
    )


# ---------------------------------------------------------------- the pipelined pass (Capabilities.async_pass)


@dataclass
class _Staged:
    """One attempt's inputs made ahead by `_stage`: noise, A', B', the correction operands (empty when the pass
    does not recover C), and the event that marks them done on the side stream (None off CUDA)."""

    template: bytes
    recover_c: bool
    nz: Noise
    a2: torch.Tensor
    b2: torch.Tensor
    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    done: torch.cuda.Event | None


_side_streams: dict[str, torch.cuda.Stream] = {}


def _pipelined(caps: Capabilities) -> bool:
    """Whether passes on this backend are pipelined: asked for (`Capabilities.async_pass`, POUW_CUDA_ASYNC=1) and
    a backend whose noise and A', B' are made on its device."""
    return bool(
        caps.async_pass and caps.noise_factor is not None and caps.add_noise is not None and not caps.accepts_out
    )


def _stage(prep: PreparedJob, template: bytes, params: PowParams, backend: Backend, recover_c: bool) -> None:
    """Make the inputs of the attempt at `template` (the next nonce's) now, on a second stream of the backend's
    CUDA device, so they are computed while the GEMM queued next on the current stream runs; `mine_job` for that
    template takes them (`_take_staged`). The same calls as mine_job's own stages, so the same values."""
    dev, caps, job = backend.device, backend.caps, prep.job
    assert caps.noise_factor is not None and caps.add_noise is not None  # `_pipelined`
    m, k, n, r = job.m, job.k, job.n, params.rank
    a_d, b_d = prep.on(dev)
    side = None
    if dev.type == "cuda":
        side = _side_streams.get(str(dev))
        if side is None:
            side = _side_streams[str(dev)] = torch.cuda.Stream(device=dev)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(dev))  # A, B and what the current pass queued so far
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        nz = full_noise_on(derive_seeds(template, job), m, k, n, r, dev, caps.noise_factor)
        a2, b2 = caps.add_noise(a_d, b_d, nz.e_l, nz.f_r, *nz.maps)
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        if recover_c and (caps.noisy_mm_recover is not None or caps.sub_correction is not None):
            pairs = correction_operands(a_d, b2, nz, backend.mm, caps.correction_operands, digits=recovery_digits(k, r))
        done = side.record_event() if side is not None else None
    if side is not None:  # made on the side stream, used and freed on the current one: tell the allocator
        main = torch.cuda.current_stream(dev)
        for t in (a2, b2, nz.e_l, nz.f_r, *nz.maps, *nz.__dict__.values(), *(x for p in pairs for x in p)):
            if isinstance(t, torch.Tensor):
                t.record_stream(main)
    prep._staged[str(dev)] = _Staged(template, recover_c, nz, a2, b2, pairs, done)


def _take_staged(prep: PreparedJob, dev: torch.device, template: bytes, recover_c: bool) -> _Staged | None:
    """The staged inputs of this attempt, the current stream made to wait for them on the device (not the host);
    None (and whatever was staged for another attempt dropped) when there are none."""
    st = prep._staged.pop(str(dev), None)
    if st is None or st.template != template or st.recover_c != recover_c:
        return None
    if st.done is not None:
        torch.cuda.current_stream(dev).wait_event(st.done)
    return st


# ----------------------------------------------------------------


def mine_job(
    template: bytes,
    job: JobCommitment,
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    target: int,
    params: PowParams,
    backend: Backend | None = None,
    prepared: PreparedJob | None = None,
    recover_c: bool = True,
    max_proofs: int = 8,
    stage_sync: bool = True,
    next_template: bytes | None = None,
) -> MiningResult:
    """Mine `job` (whose commitment is inside `template`) once; return C, all tickets and winning proofs.

    stage_sync=True waits for the device after every stage so that `timings` splits the pass truthfully;
    False (what a miner wants) lets an asynchronous device run the stages back to back while the host queues
    the next ones: the only waits left are the winner search's copies to the host. Results are the same.
    next_template: the template the caller mines next with the same job (the next nonce). On a backend whose
    passes are pipelined (`Capabilities.async_pass`, opt-in), that attempt's noise, A', B' and correction operands
    are made on a second stream while this pass's GEMM runs, and the winners come back in one fixed-size copy.
    Results are the same with or without it.
    """
    t0 = time.perf_counter()
    prep = prepared if prepared is not None else prepare_job(a, b, params)
    if prep.job != job:
        raise JobError("operands do not match the job commitment in the template")
    backend = backend or get_backend("cpu")
    dev = backend.device
    sync: Callable[[], None] = (
        (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" and stage_sync else (lambda: None)
    )
    m, k, n = job.m, job.k, job.n
    r, h, w = params.rank, params.tile_h, params.tile_w
    a_d, b_d = prep.on(dev)
    t1 = time.perf_counter()
    seeds = derive_seeds(template, job)
    caps = backend.caps
    pipelined = _pipelined(caps)
    staged = _take_staged(prep, dev, template, recover_c) if pipelined else None
    if staged is not None:  # made during the previous pass, on a second stream
        nz, a2, b2 = staged.nz, staged.a2, staged.b2
    elif caps.noise_factor is not None:  # factors generated on the device
        nz = full_noise_on(seeds, m, k, n, r, dev, caps.noise_factor)
    else:
        nz = full_noise(seeds, m, k, n, r).to(dev)
    add_noise = caps.add_noise  # fused path (native CPU kernel, Triton)
    reuse = caps.accepts_out  # write into this thread's reused buffers
    if staged is None and add_noise is not None:
        if reuse:
            a2, b2 = add_noise(
                a_d,
                b_d,
                nz.e_l,
                nz.f_r,
                *nz.maps,
                out=(_scratch_buffer("a2", (m, k), torch.int8), _scratch_buffer("b2", (k, n), torch.int8)),
            )
        else:
            a2, b2 = add_noise(a_d, b_d, nz.e_l, nz.f_r, *nz.maps)
    elif staged is None:
        a2, b2 = noisy_operands(a_d, b_d, nz, backend.mm)
    sync()
    t2 = time.perf_counter()
    fused = caps.noisy_mm_recover if recover_c else None
    sub = caps.sub_correction
    # made only for the two paths below that use them
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = staged.pairs if staged is not None else []
    if staged is None and recover_c and (fused is not None or sub is not None):
        # the recovery's digit operands, made now while A and B' are still in cache (the GEMM evicts them); their
        # count fixed from k and r (the operands are range-checked), so nothing here waits for a device
        pairs = correction_operands(a_d, b2, nz, backend.mm, caps.correction_operands, digits=recovery_digits(k, r))
    sync()
    t2b = time.perf_counter()
    if pipelined and next_template is not None:
        _stage(prep, next_template, params, backend, recover_c)  # runs beside the GEMM queued below
    if fused is not None:
        # Recovery fused into the GEMM's epilogue: the kernel returns C itself, C' never reaches memory.
        c, msgs = fused(a2, b2, r, h, w, pairs)
    elif reuse:
        # C' is reused only when it is not returned (recovered in place into C, which the caller keeps)
        out_c = torch.empty((m, n), dtype=torch.int32) if recover_c else _scratch_buffer("c", (m, n), torch.int32)
        out_msgs = _scratch_buffer("msgs", (m // h, n // w, MSG_WORDS), torch.int32)
        c, msgs = backend.noisy_mm(a2, b2, r, h, w, out=(out_c, out_msgs))
    else:
        c, msgs = backend.noisy_mm(a2, b2, r, h, w)
    sync()
    t3 = time.perf_counter()
    tickets = backend.tile_tickets(ticket_prefix(seeds.job_key), msgs)
    sync()
    t4 = time.perf_counter()
    result: torch.Tensor | None = c
    if not recover_c:
        result = None
    elif fused is None and sub is not None:
        sub(c, pairs)  # c -= sum_i 128^i U_i V_i in place: C' becomes C
    elif fused is None:
        result = recover(c, a_d, b2, nz, backend.mm)
    sync()
    t5 = time.perf_counter()
    n_winners, best = winning_tiles(tickets, win_threshold(target, params.tile_work(k)), max_proofs, one_copy=pipelined)
    tj_n = n // w
    proofs = [make_proof(prep, seeds.job_key, i // tj_n, i % tj_n, t, params) for i, t in best]
    t6 = time.perf_counter()
    timings = {
        "prepare": t1 - t0,
        "noise": t2 - t1,
        "operands": t2b - t2,
        "gemm": t3 - t2b,
        "tickets": t4 - t3,
        "recover": t5 - t4,
        "proofs": t6 - t5,
        "total": t6 - t0,
    }
    return MiningResult(seeds.job_key, result, tickets, proofs, n_winners, timings)

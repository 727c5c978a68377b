"""CPU backend: the native fused kernels (kernels/native: AVX512-VNNI, AVX2 or NEON, chosen from the CPU's flags and
$POUW_NATIVE), else a portable path on PyTorch; results are bit-identical.

The portable path (aarch64, no C compiler, POUW_NATIVE=off, or a CPU without AVX2) runs the faster of two exact
int8 GEMMs, picked by a short measurement the first time one is needed (or by $POUW_PORTABLE_GEMM=int_mm|fp32):
`torch._int_mm`, or fp32 GEMM in k-chunks of at most FP32_EXACT_K (every partial sum of int8 products then has
magnitude <= 128 * 128 * 1024 = 2^24, so fp32 holds it exactly; the chunks are added in int32). The transcript is
folded per row block (`noisy_matmul_torch`): the block of C' is the accumulator, each chunk product is added into
it in place and its tile rows XORed while it is in cache, row blocks run on torch's thread count at once. The
portable path also declares its own noise (torch gathers), the recovery fused into the row blocks, and tickets
hashed from one buffer (`tile_tickets_hashlib`); all bit-identical to the generic paths and references.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import logging
import os
import threading
import time
from typing import Any
from types import ModuleType

import numpy as np
import torch

from kernels.base import MSG_WORDS, ROT, Capabilities, ShapeError, check_operands
from kernels.logevent import event

log = logging.getLogger("pouw." + __name__)  # pouw.kernels.*: the one logger hierarchy


def xor_rows(acc: np.ndarray, h: int, out: np.ndarray) -> None:
    """out = XOR of each run of h rows of `acc` (R x n uint32 -> R/h x n, R % h == 0): one pass over `acc` with
    the output row in L1 (numpy's reduction over a middle axis XORs whole contiguous rows)."""
    rows, n = acc.shape
    np.bitwise_xor.reduce(acc.reshape(rows // h, h, n), axis=1, out=out)


def xor_cols(x: np.ndarray, w: int) -> np.ndarray:
    """XOR of each run of w adjacent words along the last axis: (..., n) uint32, C-contiguous -> (..., n/w).
    One XOR per lane of a tile over strided views (numpy's reduction over a short contiguous axis is slower); an
    even w runs as w/2 64-bit lanes (a word pair never straddles two tiles), then high half ^ low half."""
    *lead, n = x.shape
    lanes = w // 2 if w % 2 == 0 else w
    y = (x.view(np.uint64) if w % 2 == 0 else x).reshape(*lead, n // w, lanes)
    z = y[..., 0].copy()
    for j in range(1, lanes):
        np.bitwise_xor(z, y[..., j], out=z)
    if w % 2 == 0:
        z = (z ^ (z >> np.uint64(32))).astype(np.uint32)  # the low 32 bits: lo ^ hi
    return z


def fold_group(msg_t: np.ndarray, c0: int, xs: np.ndarray) -> None:
    """Fold chunks c0 .. c0 + len(xs) - 1 (all in one round of MSG_WORDS chunks) into slot-major messages:
    msg_t[c % 16] = rotl32(msg_t[c % 16], ROT) ^ xs[c - c0] (uint32 arrays, msg_t in place)."""
    s0 = c0 % MSG_WORDS
    cur = msg_t[s0 : s0 + len(xs)]
    np.bitwise_xor((cur << np.uint32(ROT)) | (cur >> np.uint32(32 - ROT)), xs, out=cur)


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 x int8 -> int32 on the CPU for any shape (torch._int_mm needs m > 16, k, n % 8 == 0)."""
    m, k = a.shape
    n = b.shape[1]
    if m > 16 and k % 8 == 0 and n % 8 == 0 and k >= 16:
        return torch._int_mm(a, b)
    return a.to(torch.int32) @ b.to(torch.int32)


FP32_EXACT_K = 1024  # 128 * 128 * 1024 = 2^24: every partial sum of a chunk this wide is an exact fp32 integer


def fp32_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 x int8 -> int32 on fp32 GEMM: k-chunks of at most FP32_EXACT_K, each exact in fp32, converted
    and added in int32 (int8 operands, -128 included)."""
    k = a.shape[1]
    af, bf = a.to(torch.float32), b.to(torch.float32)
    out = None
    for l0 in range(0, k, FP32_EXACT_K):
        part = (af[:, l0 : l0 + FP32_EXACT_K] @ bf[l0 : l0 + FP32_EXACT_K]).to(torch.int32)
        out = part if out is None else out.add_(part)
    if out is None:
        return torch.zeros((a.shape[0], b.shape[1]), dtype=torch.int32)
    return out


PORTABLE_GEMMS = {"int_mm": int_mm, "fp32": fp32_mm}
_portable_lock = threading.Lock()
_portable_choice: str | None = None
_portable_times: dict[str, float] = {}


def measure_portable_gemms(m: int = 256, k: int = 1024, n: int = 256, reps: int = 5) -> dict[str, float]:
    """Best-of-`reps` seconds of each portable GEMM on one m x k x n product of full-range int8 operands (after a
    warm-up call that must be exact: a GEMM that is not, e.g. oneDNN's int8 GEMM saturating vpmaddubsw on AVX2,
    gets infinity). The GEMMs take turns, so a burst of load on a shared host slows both, not one."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    a[0], b[:, 0] = 127, 127  # the largest pair sums a u8 x s8 multiply-add can meet
    want = (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)
    times: dict[str, float | None] = {}
    for name, fn in PORTABLE_GEMMS.items():
        exact = torch.equal(fn(a, b), want)
        if not exact:
            event(log, logging.WARNING, "portable GEMM not exact on this machine; not used", gemm=name)
        times[name] = float("inf") if not exact else None
    for _ in range(reps):
        for name, fn in PORTABLE_GEMMS.items():
            best = times[name]
            if best == float("inf"):
                continue
            t = time.perf_counter()
            fn(a, b)
            dt = time.perf_counter() - t
            times[name] = dt if best is None else min(best, dt)
    return {name: float("inf") if v is None else v for name, v in times.items()}


def portable_gemm() -> str:
    """The portable exact GEMM in use: $POUW_PORTABLE_GEMM (int_mm or fp32) when set, else the faster of the two
    in a short measurement made once per process (~0.1 s at most)."""
    global _portable_choice
    forced = os.environ.get("POUW_PORTABLE_GEMM", "").strip().lower()
    if forced in PORTABLE_GEMMS:
        return forced
    if _portable_choice is None:
        with _portable_lock:
            if _portable_choice is None:
                _portable_times.update(measure_portable_gemms())
                _portable_choice = min(_portable_times, key=_portable_times.__getitem__)
                times: dict[str, Any] = {f"{k}_ms": round(v * 1e3, 2) for k, v in _portable_times.items()}
                event(log, logging.INFO, "portable exact GEMM chosen", gemm=_portable_choice, **times)
    return _portable_choice


def exact_mm(a: torch.Tensor, b: torch.Tensor, method: str | None = None) -> torch.Tensor:
    """Exact int8 A @ B -> int32 on the portable GEMM `method` (default `portable_gemm()`)."""
    return PORTABLE_GEMMS[method or portable_gemm()](a, b)


def digits128(x: torch.Tensor) -> list[torch.Tensor]:
    """Signed base-128 digits (int8 in [-64, 63], at least one) of a CPU int32 tensor: x == sum_i d_i 128^i
    (the recovery's digits, as pouw.recover.digits128 defines them)."""
    v = x.numpy().astype(np.int32)
    digits = []
    while True:
        d = ((v + 64) & 127) - 64
        digits.append(torch.from_numpy(d.astype(np.int8)))
        v = (v - d) >> 7
        if not v.any():
            return digits


def merge_digit_pairs(pairs) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(U, V) int16 with U @ V == sum_i 128^i U_i @ V_i, when the pairs have the recovery's shape (U_i = [X_i | E],
    V_i = [F ; Y_i], the same E and F in every pair) and X = sum_i 128^i X_i, Y = sum_i 128^i Y_i fit int16: then
    U = [X | E], V = [F ; Y] (the identity sum_i 128^i (X_i F + E Y_i) = X F + E Y). None otherwise."""
    if not pairs:
        return None
    w = pairs[0][0].shape[1]
    if w % 2 or any(u.shape[1] != w or v.shape[0] != w for u, v in pairs):
        return None
    h = w // 2
    e, f = pairs[0][0][:, h:], pairs[0][1][:h]
    if not all(torch.equal(u[:, h:], e) and torch.equal(v[:h], f) for u, v in pairs[1:]):
        return None
    x = torch.zeros((pairs[0][0].shape[0], h), dtype=torch.int64)
    y = torch.zeros((h, pairs[0][1].shape[1]), dtype=torch.int64)
    for i, (u, v) in enumerate(pairs):
        if i >= 3:  # 128^3 * 64 > 2^15: a fourth digit cannot fit int16
            return None
        x += u[:, :h].to(torch.int64) << (7 * i)
        y += v[h:].to(torch.int64) << (7 * i)
    lim = 1 << 15
    if (
        x.numel()
        and (int(x.min()) < -lim or int(x.max()) >= lim)
        or y.numel()
        and (int(y.min()) < -lim or int(y.max()) >= lim)
    ):
        return None
    return (
        torch.cat([x.to(torch.int16), e.to(torch.int16)], dim=1),
        torch.cat([f.to(torch.int16), y.to(torch.int16)], dim=0),
    )


class _ChunkGemm:
    """Exact int8 products written into int32 buffers, on the portable GEMM `method`: torch._int_mm with out= (any
    strides of A it takes; small shapes as int32 matmuls), or fp32 GEMM of pieces of at most FP32_EXACT_K into a
    reused fp32 buffer, converted into the int32 one (exact: see fp32_mm). Operands go in through `prep` (fp32:
    converted once), so that the chunk loop converts nothing."""

    def __init__(self, method: str, rows: int, n: int) -> None:
        self.fp32 = method == "fp32"
        self._fbuf = torch.empty((rows, n), dtype=torch.float32) if self.fp32 else None

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) if self.fp32 else x

    def into(self, dst: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dst = x @ y exactly (x, y as `prep` returned them); returns dst."""
        rows, k = x.shape
        n = y.shape[1]
        if self.fp32:
            assert self._fbuf is not None
            fbuf = self._fbuf[:rows]
            if k == 0:
                return dst.zero_()
            for l0 in range(0, k, FP32_EXACT_K):
                torch.mm(x[:, l0 : l0 + FP32_EXACT_K], y[l0 : l0 + FP32_EXACT_K], out=fbuf)
                if l0 == 0:
                    dst.copy_(fbuf)  # integer-valued fp32 -> int32: exact
                else:
                    dst.add_(fbuf.to(torch.int32))
            return dst
        if rows > 16 and k % 8 == 0 and n % 8 == 0 and k >= 16:
            return torch._int_mm(x, y, out=dst)
        return dst.copy_(x.to(torch.int32) @ y.to(torch.int32))


FOLD_GROUP = 8  # chunks whose tile rows a row block keeps before XORing their tile columns (divides MSG_WORDS)
_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _workers() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that run row blocks beside the caller's (torch._int_mm, numpy and hashlib release the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="pouw-portable"
            )
        return _pool


def portable_threads() -> int:
    """Row blocks the portable path runs at once: $POUW_PORTABLE_THREADS when set to a positive integer, else 1
    (measured on a shared 2-core host: a second thread cut the wall time by a fifth but cost a third more CPU
    time, and none at all when another process held a core)."""
    try:
        return max(1, int(os.environ.get("POUW_PORTABLE_THREADS", "1")))
    except ValueError:
        return 1


def noisy_matmul_torch(
    a: torch.Tensor,
    b: torch.Tensor,
    r: int,
    tile_h: int,
    tile_w: int,
    block_rows: int = 512,
    method: str | None = None,
    pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract of kernels.base on torch GEMMs: `method` "int_mm" (torch._int_mm per chunk) or "fp32" (fp32
    GEMM per chunk, or per piece of at most FP32_EXACT_K of a wider chunk; exact), default `portable_gemm()`.

    Row blocks of `block_rows` rows (a multiple of tile_h), `threads` of them at a time (default
    `portable_threads()`; the caller's thread is one): a block's int32 accumulator is the block of C' itself
    and stays in cache while its k/r chunk products are added (numpy, in place); after each chunk its tile rows
    are XORed into one row each (`xor_rows`), after every FOLD_GROUP chunks their tile columns (`xor_cols`), which
    go into the block's messages (`fold_group`). pairs=[(U_i, V_i)] (the recovery's,
    `Capabilities.noisy_mm_recover`): each block then becomes C = C' - sum_i 128^i U_i V_i in place after its last
    chunk (C' is never written out whole). out=(c, msgs): contiguous buffers to write into."""
    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    method = method or portable_gemm()
    if method not in PORTABLE_GEMMS:
        raise ValueError(f"unknown portable GEMM {method!r}")
    h, w = tile_h, tile_w
    a = a.contiguous()
    b = b.contiguous()
    nc = k // r
    R = max(h, (block_rows // h) * h)
    c_out, msgs_out = (
        out
        if out is not None
        else (torch.empty((m, n), dtype=torch.int32), torch.empty((m // h, n // w, MSG_WORDS), dtype=torch.int32))
    )
    if not (c_out.is_contiguous() and msgs_out.is_contiguous()):
        raise ValueError("out= buffers must be contiguous")
    msgs_np = msgs_out.numpy().view(np.uint32)
    fp32 = method == "fp32"
    b_g = b.to(torch.float32) if fp32 else b
    pairs_g = [(u, v.to(torch.float32) if fp32 else v) for u, v in (pairs or [])]
    rb = min(R, m)
    starts = iter(range(0, m, R))
    lock = threading.Lock()

    def next_block() -> int | None:
        with lock:
            return next(starts, None)

    def work() -> None:
        gemm = _ChunkGemm(method, rb, n)
        scratch = torch.empty((rb, n), dtype=torch.int32) if nc > 1 or pairs_g else None
        scratch_np = scratch.numpy().view(np.uint32) if scratch is not None else None
        rowbuf = np.empty(min(FOLD_GROUP, nc) * (rb // h) * n, dtype=np.uint32)
        while (i := next_block()) is not None:
            rows = min(R, m - i)
            th = rows // h
            acc = c_out[i : i + rows]  # contiguous rows of C'
            acc_np = acc.numpy().view(np.uint32)
            grp = rowbuf[: min(FOLD_GROUP, nc) * th * n].reshape(min(FOLD_GROUP, nc), th, n)
            msg_t = np.zeros((MSG_WORDS, th, n // w), dtype=np.uint32)
            a_g = gemm.prep(a[i : i + rows])
            if nc == 0:
                acc.zero_()
            for c in range(nc):
                if c == 0:
                    gemm.into(acc, a_g[:, :r], b_g[:r])
                else:
                    assert scratch is not None and scratch_np is not None
                    gemm.into(scratch[:rows], a_g[:, c * r : (c + 1) * r], b_g[c * r : (c + 1) * r])
                    np.add(acc_np, scratch_np[:rows], out=acc_np)
                g = c % FOLD_GROUP
                xor_rows(acc_np, h, grp[g])
                if g == FOLD_GROUP - 1 or c == nc - 1:
                    fold_group(msg_t, c - g, xor_cols(grp[: g + 1], w))
            msgs_np[i // h : (i + rows) // h] = msg_t.transpose(1, 2, 0)
            for d, (u, v) in enumerate(pairs_g):
                # C = C' - sum_d 128^d U_d V_d, in uint32 arithmetic (mod 2^32, as the contract says)
                assert scratch is not None and scratch_np is not None
                gemm.into(scratch[:rows], gemm.prep(u[i : i + rows]), v)
                p = scratch_np[:rows]
                if d:
                    np.multiply(p, np.uint32(pow(128, d, 1 << 32)), out=p)
                np.subtract(acc_np, p, out=acc_np)

    nblocks = -(-m // R)
    helpers = [_workers().submit(work) for _ in range(min(threads or portable_threads(), nblocks) - 1)]
    try:
        work()
    finally:
        for f in helpers:
            f.result()
    return c_out, msgs_out


def add_noise_torch(
    a: torch.Tensor,
    b: torch.Tensor,
    e_l: torch.Tensor,
    f_r: torch.Tensor,
    map_a,
    map_b,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`Capabilities.add_noise` on torch gathers: A' = A + E_L[:, map_A], B' = B + F_R[map_B] (int8; bit for bit
    `pouw.noise_torch.noisy_operands`, the sum wrapping mod 256 as its int32 -> int8 conversion does; operands in
    the protocol's ranges never wrap). A gather writes E (F) straight into A' (B'), then A (B) is added in place:
    no int32 pass over m x k or k x n."""
    m, k = a.shape
    n = b.shape[1]
    ma = torch.as_tensor(np.asarray(map_a) if not isinstance(map_a, torch.Tensor) else map_a, dtype=torch.int64)
    mb = torch.as_tensor(np.asarray(map_b) if not isinstance(map_b, torch.Tensor) else map_b, dtype=torch.int64)
    a2 = out[0] if out is not None else torch.empty((m, k), dtype=torch.int8)
    b2 = out[1] if out is not None else torch.empty((k, n), dtype=torch.int8)
    torch.gather(e_l, 1, ma.view(1, k).expand(m, k), out=a2)
    torch.index_select(f_r, 0, mb, out=b2)
    return a2.add_(a), b2.add_(b)


@functools.lru_cache(maxsize=8)
def _tile_indices(ti_n: int, tj_n: int) -> np.ndarray:
    """(ti_n * tj_n, 2) little-endian u32: (ti, tj) of every tile, row-major (read-only, cached per shape)."""
    idx = np.empty((ti_n * tj_n, 2), dtype="<u4")
    idx[:, 0] = np.repeat(np.arange(ti_n, dtype=np.uint32), tj_n)
    idx[:, 1] = np.tile(np.arange(tj_n, dtype=np.uint32), ti_n)
    idx.flags.writeable = False
    return idx


def tile_tickets_hashlib(prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
    """`Backend.tile_tickets` on hashlib, bit for bit `kernels.base.tile_tickets_reference`: every tile's input
    (prefix || u32 ti || u32 tj || 16 words LE) laid out in one buffer by numpy, then one sha256 call per slice
    of it (no per-tile copies, concatenations or integer encodings in Python)."""
    ti_n, tj_n, words = msgs.shape
    if words != MSG_WORDS:
        raise ShapeError(f"messages must have {MSG_WORDS} words, got {words}")
    t = ti_n * tj_n
    if t == 0:
        return torch.zeros((ti_n, tj_n, 32), dtype=torch.uint8)
    p = len(prefix)
    size = p + 8 + 4 * MSG_WORDS
    buf = np.empty((t, size), dtype=np.uint8)
    buf[:, :p] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, p : p + 8] = _tile_indices(ti_n, tj_n).view(np.uint8)
    buf[:, p + 8 :] = msgs.detach().cpu().contiguous().numpy().reshape(t, MSG_WORDS).astype("<u4").view(np.uint8)
    raw = buf.tobytes()
    sha = hashlib.sha256
    out = b"".join([sha(raw[o : o + size]).digest() for o in range(0, t * size, size)])
    return torch.frombuffer(bytearray(out), dtype=torch.uint8).reshape(ti_n, tj_n, 32)


class CpuBackend:
    """The CPU backend. native=None: the fused kernel $POUW_NATIVE selects (`native_loader.gemm_kernel()`) when the
    native library loads, else the portable torch path; native=False: the portable path only; native=True: a
    fused kernel or RuntimeError. kernel="vnni"|"avx2"|"neon": that fused kernel (RuntimeError when it does not run
    here). `kernel_path` names what the GEMM runs: "vnni", "avx2", "neon" or "portable:<gemm>". With the AVX2 kernel the noise
    gathers and the recovery use no AVX-512 either (on an AVX-512 machine it stands in for an AVX2-only CPU)."""

    name = "cpu"

    def __init__(self, native: bool | None = None, block_rows: int = 512, kernel: str | None = None) -> None:
        self.device = torch.device("cpu")
        self.block_rows = block_rows
        self._native: ModuleType | None = None  # native_loader when a fused kernel runs
        self.kernel: str | None = None  # the fused kernel in use
        # the native library for tile tickets / add_noise (any CPU: always faster than Python)
        self._aux: ModuleType | None = None
        if native is not False:
            try:
                from kernels import native_loader

                if native_loader.available():
                    self._aux = native_loader
                    self.kernel = native_loader.gemm_kernel() if kernel is None else kernel
                    if kernel is not None and kernel not in native_loader.supported_kernels():
                        raise RuntimeError(f"native kernel {kernel!r} does not run on this CPU")
                    if self.kernel is not None:
                        self._native = native_loader
                        self._kernels = [self.kernel] + (
                            ["avx2"] if self.kernel == "vnni" and native_loader.has_avx2() else []
                        )
            except ImportError:
                self._native = None
            if (native or kernel) and self._native is None:
                raise RuntimeError("native CPU kernel requested but unavailable")
        self._native_tickets = self._aux is not None and self._aux.has_tickets()
        self.caps = self._capabilities()

    def _capabilities(self) -> Capabilities:
        """The optional hooks of `kernels.base.Capabilities` this backend runs: with the native library the fused
        noise, the digit operands and the one-pass recovery (AVX512-VNNI, or their AVX2 stand-ins when the AVX2
        kernel runs: an AVX2-only CPU uses no AVX-512 anywhere), out= buffers and the engine's plain GEMM."""
        if self._aux is None:
            # the portable path: torch gathers for the noise, the recovery fused into the GEMM's row blocks
            return Capabilities(
                add_noise=add_noise_torch, noisy_mm_recover=self._portable_noisy_mm_recover, accepts_out=True
            )
        aux = self._aux
        if self.kernel == "avx2":
            return Capabilities(
                add_noise=functools.partial(aux.add_noise, force_portable=True),
                sub_correction=self._avx2_sub_correction,
                correction_operands=self._avx2_correction_operands,
                plain_mm=self.plain_mm,
                accepts_out=True,
            )
        return Capabilities(
            add_noise=aux.add_noise,
            sub_correction=aux.sub_correction if aux.has_sub_correction() else None,
            correction_operands=aux.correction_operands if aux.has_correction_operands() else None,
            plain_mm=self.plain_mm if self._native is not None else None,
            accepts_out=self._native is not None,
        )

    def _avx2_correction_operands(
        self, a: torch.Tensor, b_noisy: torch.Tensor, e_l: torch.Tensor, f_r: torch.Tensor, map_a, map_b
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`Backend.correction_operands` with the AVX2 kernel, bit for bit `pouw.recover.correction_operands`:
        A·Q and P·B' as column and row sums (`native_loader.avx2_gather_cols` / `avx2_scatter_rows`: the maps
        have one 1 per column of P and row of Q, so no GEMM), the signed base-128 digits in numpy,
        U_i = [AQ_i | e_l], V_i = [f_r ; PB_i]."""
        aux = self._aux
        assert aux is not None  # `_capabilities` installs this hook only with the native library
        r = e_l.shape[1]
        da = digits128(aux.avx2_gather_cols(a, map_b, r))
        db = digits128(aux.avx2_scatter_rows(b_noisy, map_a, r))
        out = []
        for i in range(max(len(da), len(db))):
            u = torch.cat([da[i] if i < len(da) else torch.zeros_like(da[0]), e_l], dim=1).contiguous()
            v = torch.cat([f_r, db[i] if i < len(db) else torch.zeros_like(db[0])], dim=0).contiguous()
            out.append((u, v))
        return out

    def _avx2_sub_correction(self, c: torch.Tensor, pairs) -> torch.Tensor:
        """c -= sum_i 128^i U_i V_i where m % 4 == 0: pairs shaped like the recovery's (`merge_digit_pairs`) as one
        int16 GEMM of half the multiply-adds, others as one AVX2 GEMM over all digits; else Horner on `mm`."""
        aux = self._aux
        assert aux is not None  # `_capabilities` installs this hook only with the native library
        pairs = list(pairs)
        try:
            merged = merge_digit_pairs(pairs) if c.shape[0] % 4 == 0 else None
            if merged is not None:
                return aux.avx2_sub_i16(c, *merged)
            return aux.avx2_sub_correction(c, pairs)
        except ShapeError:
            acc = None
            for u, v in reversed(list(pairs)):
                term = self.mm(u, v)
                acc = term if acc is None else acc.mul_(128).add_(term)
            return c if acc is None else c.sub_(acc)

    @property
    def kernel_path(self) -> str:
        """What the fused GEMM runs: "vnni", "avx2" or "portable:<gemm>"."""
        return self.kernel or f"portable:{portable_gemm()}"

    def mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact A @ B: the AVX2 or NEON kernel's plain GEMM where it runs and the shape fits (torch._int_mm has no
        fast path there), torch._int_mm with AVX512-VNNI (oneDNN's is fast), else the portable exact GEMM."""
        if self.kernel in ("avx2", "neon") and self._native is not None:  # a fused kernel implies the library
            try:
                return self._native.plain_matmul(a.contiguous(), b.contiguous(), kernel=self.kernel)
            except ShapeError:
                pass
        if self.kernel == "vnni":
            # a column-major B (e.g. the noise's Q) goes in as it is: oneDNN takes it, and faster than row-major
            return int_mm(a.contiguous(), b if b.t().is_contiguous() else b.contiguous())
        return exact_mm(a.contiguous(), b.contiguous())

    def plain_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact A @ B on the engine's own GEMM with the transcript switched off (the fused kernel when one runs
        here and the shape fits, else `mm`): the mining benchmark's "engine plain GEMM"."""
        if self._native is not None:
            try:
                return self._native.plain_matmul(a.contiguous(), b.contiguous(), kernel=self.kernel)
            except ShapeError:
                pass
        return self.mm(a, b)

    def noisy_mm(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        r: int,
        tile_h: int,
        tile_w: int,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._native is not None:
            m, k = a.shape
            for kern in self._kernels:  # VNNI first; AVX2 takes some parameters VNNI does not
                if self._native.kernel_path(m, k, b.shape[1], r, tile_h, tile_w, kernel=kern) != "portable":
                    return self._native.noisy_matmul(
                        a.contiguous(), b.contiguous(), r, tile_h, tile_w, out=out, kernel=kern
                    )
        # no fused kernel takes these parameters: the torch path beats the plain C one
        return noisy_matmul_torch(a, b, r, tile_h, tile_w, self.block_rows, out=out, threads=portable_threads())

    def _portable_noisy_mm_recover(
        self, a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int, pairs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`Capabilities.noisy_mm_recover` on the portable path: each row block of C' is recovered in place after
        its last chunk, while it is still in cache."""
        return noisy_matmul_torch(
            a, b, r, tile_h, tile_w, self.block_rows, pairs=list(pairs), threads=portable_threads()
        )

    def tile_tickets(self, prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
        if self._native_tickets and self._aux is not None:  # _native_tickets implies the library
            return self._aux.tile_tickets(prefix, msgs)
        return tile_tickets_hashlib(prefix, msgs)

"""CPU backend: the native fused kernels (kernels/native: AVX512-VNNI, AVX2 or NEON, chosen from the CPU's flags and
$POUW_NATIVE), else a portable path on PyTorch; results are bit-identical.

The portable path (aarch64, no C compiler, POUW_NATIVE=off, or a CPU without AVX2) runs the faster of two exact
int8 GEMMs, picked by a short measurement the first time one is needed (or by $POUW_PORTABLE_GEMM=int_mm|fp32):
`torch._int_mm`, or fp32 GEMM in k-chunks of at most FP32_EXACT_K (every partial sum of int8 products then has
magnitude <= 128 * 128 * 1024 = 2^24, so fp32 holds it exactly; the chunks are added in int32). The transcript is
folded per row block: row blocks of `block_rows` rows keep the int32 accumulator block in cache while the k chunks
are added, and the tile XOR fold runs on that block after every chunk (halving XORs, contiguous slabs first).
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time

import numpy as np
import torch

from kernels.base import MSG_WORDS, ROT, Capabilities, ShapeError, check_operands, tile_tickets_reference

log = logging.getLogger("pouw." + __name__)  # pouw.kernels.*: the one logger hierarchy


def tile_xor(acc: np.ndarray, h: int, w: int) -> np.ndarray:
    """XOR of each h x w tile of a (R x n) uint32 block -> (R/h x n/w) uint32."""
    rows, cols = acc.shape
    y = acc.reshape(rows // h, h, cols)
    while y.shape[1] > 1:
        half = y.shape[1] // 2
        z = y[:, :half] ^ y[:, half:2 * half]
        if y.shape[1] % 2:   # odd heights: the last row goes into the first
            z[:, :1] ^= y[:, 2 * half:]
        y = z
    y = y.reshape(rows // h, cols // w, w)
    while y.shape[2] > 1:
        half = y.shape[2] // 2
        z = y[:, :, :half] ^ y[:, :, half:2 * half]
        if y.shape[2] % 2:
            z[:, :, :1] ^= y[:, :, 2 * half:]
        y = z
    return y[:, :, 0]


def fold_into(msgs: np.ndarray, x: np.ndarray, chunk: int) -> None:
    """msgs[..., slot] = rotl32(msgs[..., slot], 13) ^ x  (uint32 arrays, in place)."""
    slot = chunk % MSG_WORDS
    cur = msgs[..., slot]
    msgs[..., slot] = ((cur << np.uint32(ROT)) | (cur >> np.uint32(32 - ROT))) ^ x


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 x int8 -> int32 on the CPU for any shape (torch._int_mm needs m > 16, k, n % 8 == 0)."""
    m, k = a.shape
    n = b.shape[1]
    if m > 16 and k % 8 == 0 and n % 8 == 0 and k >= 16:
        return torch._int_mm(a, b)
    return (a.to(torch.int32) @ b.to(torch.int32))


FP32_EXACT_K = 1024   # 128 * 128 * 1024 = 2^24: every partial sum of a chunk this wide is an exact fp32 integer


def fp32_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 x int8 -> int32 on fp32 GEMM: k-chunks of at most FP32_EXACT_K, each exact in fp32, converted
    and added in int32 (int8 operands, -128 included)."""
    k = a.shape[1]
    af, bf = a.to(torch.float32), b.to(torch.float32)
    out = None
    for l0 in range(0, k, FP32_EXACT_K):
        part = (af[:, l0:l0 + FP32_EXACT_K] @ bf[l0:l0 + FP32_EXACT_K]).to(torch.int32)
        out = part if out is None else out.add_(part)
    if out is None:
        return torch.zeros((a.shape[0], b.shape[1]), dtype=torch.int32)
    return out


PORTABLE_GEMMS = {"int_mm": int_mm, "fp32": fp32_mm}
_portable_lock = threading.Lock()
_portable_choice: str | None = None
_portable_times: dict[str, float] = {}


def measure_portable_gemms(m: int = 256, k: int = 1024, n: int = 256, reps: int = 3) -> dict[str, float]:
    """Best-of-`reps` seconds of each portable GEMM on one m x k x n product of full-range int8 operands (after a
    warm-up call that must be exact: a GEMM that is not, e.g. oneDNN's int8 GEMM saturating vpmaddubsw on AVX2,
    gets infinity)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    a[0], b[:, 0] = 127, 127   # the largest pair sums a u8 x s8 multiply-add can meet
    want = (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)
    times = {}
    for name, fn in PORTABLE_GEMMS.items():
        if not torch.equal(fn(a, b), want):
            log.warning("portable GEMM %s is not exact on this machine: not used", name)
            times[name] = float("inf")
            continue
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn(a, b)
            best = min(best, time.perf_counter() - t)
        times[name] = best
    return times


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
                _portable_choice = min(_portable_times, key=_portable_times.get)
                log.info("portable exact GEMM: %s (%s)", _portable_choice,
                         ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in _portable_times.items()))
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
        if i >= 3:     # 128^3 * 64 > 2^15: a fourth digit cannot fit int16
            return None
        x += u[:, :h].to(torch.int64) << (7 * i)
        y += v[h:].to(torch.int64) << (7 * i)
    lim = 1 << 15
    if x.numel() and (int(x.min()) < -lim or int(x.max()) >= lim) or y.numel() and (int(y.min()) < -lim or
                                                                                    int(y.max()) >= lim):
        return None
    return (torch.cat([x.to(torch.int16), e.to(torch.int16)], dim=1),
            torch.cat([f.to(torch.int16), y.to(torch.int16)], dim=0))


def noisy_matmul_torch(a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int,
                       block_rows: int = 256, method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract of kernels.base on torch GEMMs: `method` "int_mm" (torch._int_mm per chunk) or "fp32" (fp32
    GEMM per chunk, or per piece of at most FP32_EXACT_K of a wider chunk; exact), default `portable_gemm()`."""
    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    method = method or portable_gemm()
    if method not in PORTABLE_GEMMS:
        raise ValueError(f"unknown portable GEMM {method!r}")
    a = a.contiguous()
    b = b.contiguous()
    nc = k // r
    R = max(tile_h, (block_rows // tile_h) * tile_h)
    out = torch.empty(m, n, dtype=torch.int32)
    msgs = np.zeros((m // tile_h, n // tile_w, MSG_WORDS), dtype=np.uint32)
    if method == "fp32":
        b_chunks = [b[c * r:(c + 1) * r].to(torch.float32) for c in range(nc)]
        pieces = [(l0, min(l0 + FP32_EXACT_K, r)) for l0 in range(0, r, FP32_EXACT_K)]
    else:
        b_chunks = [b[c * r:(c + 1) * r] for c in range(nc)]
    for i in range(0, m, R):
        rows = min(R, m - i)
        ablk = a[i:i + rows].view(rows, nc, r).transpose(0, 1).contiguous()
        if method == "fp32":
            ablk = ablk.to(torch.float32)
        acc = torch.zeros(rows, n, dtype=torch.int32)
        acc_np = acc.numpy().view(np.uint32)
        blk_msgs = msgs[i // tile_h:(i + rows) // tile_h]
        for c in range(nc):
            if method == "fp32":
                for l0, l1 in pieces:
                    acc += (ablk[c][:, l0:l1] @ b_chunks[c][l0:l1]).to(torch.int32)
            else:
                acc += int_mm(ablk[c], b_chunks[c])
            fold_into(blk_msgs, tile_xor(acc_np, tile_h, tile_w), c)
        out[i:i + rows] = acc
    return out, torch.from_numpy(msgs.view(np.int32))


class CpuBackend:
    """The CPU backend. native=None: the fused kernel $POUW_NATIVE selects (`native_loader.gemm_kernel()`) when the
    native library loads, else the portable torch path; native=False: the portable path only; native=True: a
    fused kernel or RuntimeError. kernel="vnni"|"avx2"|"neon": that fused kernel (RuntimeError when it does not run
    here). `kernel_path` names what the GEMM runs: "vnni", "avx2", "neon" or "portable:<gemm>". With the AVX2 kernel the noise
    gathers and the recovery use no AVX-512 either (on an AVX-512 machine it stands in for an AVX2-only CPU)."""

    name = "cpu"

    def __init__(self, native: bool | None = None, block_rows: int = 256, kernel: str | None = None) -> None:
        self.device = torch.device("cpu")
        self.block_rows = block_rows
        self._native = None
        self.kernel: str | None = None   # the fused kernel in use
        self._aux = None  # the native library for tile tickets / add_noise (any CPU: always faster than Python)
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
                        self._kernels = [self.kernel] + (["avx2"] if self.kernel == "vnni" and native_loader.has_avx2()
                                                         else [])
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
            return Capabilities()
        aux = self._aux
        if self.kernel == "avx2":
            return Capabilities(add_noise=functools.partial(aux.add_noise, force_portable=True),
                                sub_correction=self._avx2_sub_correction,
                                correction_operands=self._avx2_correction_operands,
                                plain_mm=self.plain_mm, accepts_out=True)
        return Capabilities(add_noise=aux.add_noise,
                            sub_correction=aux.sub_correction if aux.has_sub_correction() else None,
                            correction_operands=aux.correction_operands if aux.has_correction_operands() else None,
                            plain_mm=self.plain_mm if self._native is not None else None,
                            accepts_out=self._native is not None)

    def _avx2_correction_operands(self, a: torch.Tensor, b_noisy: torch.Tensor, e_l: torch.Tensor,
                                  f_r: torch.Tensor, map_a, map_b) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`Backend.correction_operands` with the AVX2 kernel, bit for bit `pouw.recover.correction_operands`:
        A·Q and P·B' as column and row sums (`native_loader.avx2_gather_cols` / `avx2_scatter_rows`: the maps
        have one 1 per column of P and row of Q, so no GEMM), the signed base-128 digits in numpy,
        U_i = [AQ_i | e_l], V_i = [f_r ; PB_i]."""
        r = e_l.shape[1]
        da = digits128(self._aux.avx2_gather_cols(a, map_b, r))
        db = digits128(self._aux.avx2_scatter_rows(b_noisy, map_a, r))
        out = []
        for i in range(max(len(da), len(db))):
            u = torch.cat([da[i] if i < len(da) else torch.zeros_like(da[0]), e_l], dim=1).contiguous()
            v = torch.cat([f_r, db[i] if i < len(db) else torch.zeros_like(db[0])], dim=0).contiguous()
            out.append((u, v))
        return out

    def _avx2_sub_correction(self, c: torch.Tensor, pairs) -> torch.Tensor:
        """c -= sum_i 128^i U_i V_i where m % 4 == 0: pairs shaped like the recovery's (`merge_digit_pairs`) as one
        int16 GEMM of half the multiply-adds, others as one AVX2 GEMM over all digits; else Horner on `mm`."""
        pairs = list(pairs)
        try:
            merged = merge_digit_pairs(pairs) if c.shape[0] % 4 == 0 else None
            if merged is not None:
                return self._aux.avx2_sub_i16(c, *merged)
            return self._aux.avx2_sub_correction(c, pairs)
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
        if self.kernel in ("avx2", "neon"):
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

    def noisy_mm(self, a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int,
                 out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self._native is not None:
            m, k = a.shape
            for kern in self._kernels:   # VNNI first; AVX2 takes some parameters VNNI does not
                if self._native.kernel_path(m, k, b.shape[1], r, tile_h, tile_w, kernel=kern) != "portable":
                    return self._native.noisy_matmul(a.contiguous(), b.contiguous(), r, tile_h, tile_w, out=out,
                                                     kernel=kern)
        # no fused kernel takes these parameters: the torch path beats the plain C one
        return noisy_matmul_torch(a, b, r, tile_h, tile_w, self.block_rows)

    def tile_tickets(self, prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
        if self._native_tickets:
            return self._aux.tile_tickets(prefix, msgs)
        return tile_tickets_reference(prefix, msgs)

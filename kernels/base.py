"""The backend interface: exact int8 GEMM with the mining transcript fused in.

A backend computes, for int8 operands A' (m x k) and B' (k x n) and a chunk width r:

    S_c = sum_{c' <= c} A'[:, c'r:(c'+1)r] @ B'[c'r:(c'+1)r, :]      (exact int32)

and, for every tile (ti, tj) of size h x w and every chunk c = 0 .. k/r - 1,

    x_c(ti, tj) = XOR of S_c[ti*h:(ti+1)*h, tj*w:(tj+1)*w] taken as uint32
    msg[c % 16] = rotl32(msg[c % 16], 13) XOR x_c          (msg starts as 16 zero words)

It returns the final product C' = S_{k/r-1} (int32, m x n) and the messages as an int32 tensor of shape
(m/h, n/w, 16) holding the uint32 words' bit patterns. Both live on the backend's `device`, like every result of
every backend method and hook (see `Backend`). Every backend returns bit-identical results for the same input;
`kernels.reference` is the obviously-correct definition (on the CPU).

Backends know nothing of seeds, noise, tickets or blocks.

This module imports torch only inside the functions that take tensors: a validator that needs just the fold's
constants (pouw.transcript) imports it without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

MSG_WORDS = 16
ROT = 13


@dataclass(frozen=True)
class Capabilities:
    """The optional stages a backend runs itself; a None hook means the caller takes the generic path.

    Every hook is bit-exact with its generic path, takes operands on the backend's `device` and returns its
    results there (as every `Backend` method does).
    """

    add_noise: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    """add_noise(a, b, e_l, f_r, map_a, map_b) -> (A', B'): A'[u][l] = a[u][l] + e_l[u][map_a[l]],
    B'[l][v] = b[l][v] + f_r[map_b[l]][v] (int8, exact; the maps are k indices in [0, r)). Generic path:
    `pouw.noise_torch.noisy_operands`."""
    sub_correction: Callable[[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]], object] | None = None
    """sub_correction(c, pairs) with pairs = [(U_i (m x w_i int8), V_i (w_i x n int8))]: c -= sum_i 128^i U_i @ V_i
    in place, int32 arithmetic mod 2^32 (the result fits int32). Generic path: `pouw.recover.correction`."""
    correction_operands: Callable[..., list[tuple[torch.Tensor, torch.Tensor]]] | None = None
    """correction_operands(a, b_noisy, e_l, f_r, map_a, map_b) -> [(U_i, V_i)]: the digit operands of
    `pouw.recover.correction_operands` (U_i = [AQ_i | e_l], V_i = [f_r ; PB_i]), bit for bit."""
    noisy_mm_recover: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    """noisy_mm_recover(a, b, r, h, w, pairs) -> (C, messages): the messages of C' = a @ b as in `noisy_mm`, and
    C = C' - sum_i 128^i U_i @ V_i (the recovery fused into the GEMM; C' never stored)."""
    plain_mm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    """plain_mm(a, b) -> exact int32 a @ b on the backend's own fused kernel with the transcript switched off (the
    "engine plain GEMM" the mining benchmark compares against, besides torch._int_mm)."""
    noise_factor: Callable[[bytes, bytes, int, int, int], torch.Tensor] | None = None
    """noise_factor(key, nonce, first_row, rows, r) -> rows x r int8, equal to `pouw.noise._factor` (the dense
    noise factors generated on the device)."""
    accepts_out: bool = False
    """True when noisy_mm(..., out=(c, msgs)) and add_noise(..., out=(a2, b2)) write into caller-owned contiguous
    buffers (pouw.miner reuses per-thread buffers for everything a pass discards)."""
    async_pass: bool = False
    """True when the miner should pipeline its passes on this (asynchronous) device: the next attempt's noise, A',
    B' and correction operands made on a second stream while this attempt's GEMM runs, and the winners found with
    one fixed-size copy to the host (`pouw.miner.mine_job`'s next_template). Same results either way."""


class Backend(Protocol):
    """Where results live: every method and every hook takes operands on `device` (or anywhere it can copy
    from) and returns its results on `device`; a caller that wants them on the host calls `.cpu()`."""

    name: str
    device: torch.device

    @property
    def kernel_path(self) -> str:
        """What the fused GEMM runs: "vnni", "avx2", "portable:<gemm>" (CPU), "triton" or "cuda" (CUDA)."""
        ...

    @property
    def caps(self) -> Capabilities:
        """The optional stages this backend runs itself (fixed for the backend's lifetime)."""
        ...

    def mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Plain exact int8 x int8 -> int32 product, any shape."""
        ...

    def noisy_mm(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        r: int,
        tile_h: int,
        tile_w: int,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(C', messages) as described in this module's docstring. A backend declaring `caps.accepts_out` writes
        them into `out` = (c, msgs), caller-owned contiguous buffers, and returns those; any other backend
        refuses an `out` (ValueError)."""
        ...

    def tile_tickets(self, prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
        """SHA-256(prefix || u32 ti || u32 tj || 16 words LE) for every tile of `msgs` (ti, tj, 16).

        Returns (ti, tj, 32) uint8. The reference is `kernels.base.tile_tickets_reference`.
        """
        ...


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A (small) host tensor copied to `device` without waiting for the device: on CUDA through pinned memory with
    a non-blocking copy (a copy from pageable memory makes torch wait for every kernel already queued, a host round
    trip; torch's pinned-memory cache keeps the staging buffer until the copy has run), elsewhere `.to(device)`."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def digit_count(lo: int, hi: int) -> int:
    """The fewest signed base-128 digits (each in [-64, 63], at least one) that hold every value in [lo, hi].

    D digits hold exactly [-64 S_D, 63 S_D] with S_D = (128^D - 1) / 127 = 1 + 128 + ... + 128^(D-1): adding 64 S_D
    maps that range one to one onto the D-digit unsigned base-128 numbers [0, 128^D - 1] (digit d <-> d + 64)."""
    d, top, bot = 1, 63, -64
    while hi > top or lo < bot:
        d, top, bot = d + 1, top * 128 + 63, bot * 128 - 64
    return d


class ShapeError(ValueError):
    """Operands that do not fit the kernel contract."""


def check_operands(a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int) -> tuple[int, int, int]:
    """Validate the kernel contract; returns (m, k, n)."""
    import torch

    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ShapeError("operands must be torch tensors")
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise ShapeError(f"operands must be int8, got {a.dtype} and {b.dtype}")
    if a.dim() != 2 or b.dim() != 2:
        raise ShapeError("operands must be 2-D")
    m, k = a.shape
    k2, n = b.shape
    if k != k2:
        raise ShapeError(f"inner dimensions disagree: {k} vs {k2}")
    if r <= 0 or k % r:
        raise ShapeError(f"k={k} is not a multiple of r={r}")
    if m % tile_h or n % tile_w:
        raise ShapeError(f"shape {m}x{n} is not a multiple of the tile {tile_h}x{tile_w}")
    return m, k, n


def rotl32(x: torch.Tensor, s: int = ROT) -> torch.Tensor:
    """Rotate int32 bit patterns left by s (as uint32)."""
    import torch

    x64 = x.to(torch.int64) & 0xFFFFFFFF
    y = ((x64 << s) | (x64 >> (32 - s))) & 0xFFFFFFFF
    return to_i32(y)


def to_i32(x64: torch.Tensor) -> torch.Tensor:
    """Reinterpret values in [0, 2^32) (int64) as int32 bit patterns."""
    import torch

    x64 = x64 & 0xFFFFFFFF
    return torch.where(x64 >= 2**31, x64 - 2**32, x64).to(torch.int32)


def tile_tickets_reference(prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
    """hashlib reference of `Backend.tile_tickets` (CPU): SHA-256(prefix || u32 ti || u32 tj || msg LE)."""
    import hashlib

    import numpy as np
    import torch

    ti_n, tj_n, _ = msgs.shape
    raw = msgs.detach().cpu().contiguous().numpy().view(np.uint32).astype("<u4").tobytes()
    base = hashlib.sha256(prefix)
    out = bytearray(32 * ti_n * tj_n)
    t = 0
    for ti in range(ti_n):
        pre = ti.to_bytes(4, "little")
        for tj in range(tj_n):
            h = base.copy()
            h.update(pre + tj.to_bytes(4, "little") + raw[64 * t : 64 * t + 64])
            out[32 * t : 32 * t + 32] = h.digest()
            t += 1
    return torch.frombuffer(out, dtype=torch.uint8).reshape(ti_n, tj_n, 32).clone()

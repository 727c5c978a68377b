"""CPU backend: exact int8 GEMM on PyTorch (`torch._int_mm`, oneDNN) with the transcript folded per row block.

Row blocks of `block_rows` rows keep the int32 accumulator block in cache while the k chunks are added, and the
tile XOR fold runs on that block after every chunk (halving XORs, contiguous slabs first). When the native
fused kernel (kernels/native) is built and enabled it is used instead; results are bit-identical.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from kernels.base import MSG_WORDS, ROT, ShapeError, check_operands, tile_tickets_reference

log = logging.getLogger(__name__)


def tile_xor(acc: np.ndarray, h: int, w: int) -> np.ndarray:
    """XOR of each h x w tile of a (R x n) uint32 block -> (R/h x n/w) uint32."""
    rows, cols = acc.shape
    y = acc.reshape(rows // h, h, cols)
    while y.shape[1] > 1:
        half = y.shape[1] // 2
        y = y[:, :half] ^ y[:, half:]
    y = y.reshape(rows // h, cols // w, w)
    while y.shape[2] > 1:
        half = y.shape[2] // 2
        y = y[:, :, :half] ^ y[:, :, half:]
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


def noisy_matmul_torch(a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int,
                       block_rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    a = a.contiguous()
    b = b.contiguous()
    nc = k // r
    R = max(tile_h, (block_rows // tile_h) * tile_h)
    out = torch.empty(m, n, dtype=torch.int32)
    msgs = np.zeros((m // tile_h, n // tile_w, MSG_WORDS), dtype=np.uint32)
    b_chunks = [b[c * r:(c + 1) * r] for c in range(nc)]
    for i in range(0, m, R):
        rows = min(R, m - i)
        ablk = a[i:i + rows].view(rows, nc, r).transpose(0, 1).contiguous()
        acc = torch.zeros(rows, n, dtype=torch.int32)
        acc_np = acc.numpy().view(np.uint32)
        blk_msgs = msgs[i // tile_h:(i + rows) // tile_h]
        for c in range(nc):
            acc += int_mm(ablk[c], b_chunks[c])
            fold_into(blk_msgs, tile_xor(acc_np, tile_h, tile_w), c)
        out[i:i + rows] = acc
    return out, torch.from_numpy(msgs.view(np.int32))


class CpuBackend:
    """The CPU backend. `native=None` uses the native fused kernel when it is available."""

    name = "cpu"

    def __init__(self, native: bool | None = None, block_rows: int = 256) -> None:
        self.device = torch.device("cpu")
        self.block_rows = block_rows
        self._native = None
        self._aux = None  # the native library for tile tickets / add_noise (any CPU: always faster than Python)
        if native is not False:
            try:
                from kernels import native_loader
                if native_loader.available():
                    self._aux = native_loader
                    # the portable C GEMM is slower than oneDNN: use the native GEMM only with VNNI
                    if native or native_loader.has_vnni():
                        self._native = native_loader
            except ImportError:
                self._native = None
            if native and self._native is None:
                raise RuntimeError("native CPU kernel requested but unavailable")
        self._native_tickets = self._aux is not None and self._aux.has_tickets()
        if self._aux is not None:
            # the optional fused-noise hook of kernels/base.py (pouw.miner looks it up with getattr)
            self.add_noise = self._aux.add_noise
            # the optional one-pass recovery hook (c -= sum_i 128^i U_i V_i), AVX512-VNNI only
            if self._aux.has_sub_correction():
                self.sub_correction = self._aux.sub_correction
            # the optional native digit operands of the recovery: no torch GEMM (and no OpenMP) in a pass
            if self._aux.has_correction_operands():
                self.correction_operands = self._aux.correction_operands

    @property
    def uses_native(self) -> bool:
        return self._native is not None

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return int_mm(a.contiguous(), b.contiguous())

    def mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # a column-major B (e.g. the noise's Q) goes in as it is: oneDNN takes it, and faster than row-major
        return int_mm(a.contiguous(), b if b.t().is_contiguous() else b.contiguous())

    def plain_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact A @ B on the engine's own GEMM with the transcript switched off (the native kernel when it runs
        here and the shape fits, else torch._int_mm): the mining benchmark's "engine plain GEMM"."""
        if self._native is not None and self._native.has_vnni():
            try:
                return self._native.plain_matmul(a.contiguous(), b.contiguous())
            except ShapeError:
                pass
        return self.mm(a, b)

    @property
    def accepts_out(self) -> bool:
        """True when noisy_mm and add_noise take `out=` buffers (the native path), which a miner reuses across
        passes instead of allocating (and page-faulting) fresh ones."""
        return self._native is not None

    def noisy_matmul(self, a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int,
                     out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self._native is not None:
            return self._native.noisy_matmul(a.contiguous(), b.contiguous(), r, tile_h, tile_w, out=out)
        return noisy_matmul_torch(a, b, r, tile_h, tile_w, self.block_rows)

    noisy_mm = noisy_matmul

    def tile_tickets(self, prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
        if self._native_tickets:
            return self._aux.tile_tickets(prefix, msgs)
        return tile_tickets_reference(prefix, msgs)

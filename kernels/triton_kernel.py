"""Triton kernel: exact int8 GEMM with the mining transcript (see `kernels.base`) fused into its k loop.

Each program owns one BLOCK_M x BLOCK_N block of C' (BLOCK_M a multiple of tile_h, BLOCK_N of tile_w) and
keeps its int32 accumulator in registers for the whole k loop. After every r columns of k (one chunk c) it
XOR-folds the accumulator tile by tile in registers, (BM, BN) -> (BM/h, h, BN/w, w) -> (BM/h, BN/w), and
updates the (BM/h * BN/w, 16) uint32 message words it also holds in registers:
msg[c % 16] = rotl32(msg[c % 16], 13) ^ x_c. Partial sums never go to global memory; C' and the messages are
stored once, at the end.

Invariants relied upon:
  * k is a multiple of r and r a multiple of BLOCK_K, so chunk boundaries fall between k steps.
  * m and n are multiples of the tile, and blocks are multiples of the tile, so each tile lies wholly inside
    or wholly outside [0, m) x [0, n). Rows/columns past m/n load as zeros (masked loads) and every store
    past m/n (entries and whole tiles) is masked off.
  * B is handed to the kernel as row-major B^T (K-contiguous), as 8-bit tensor-core MMAs want.
  * |S_c| <= 127 * 127 * k < 2^31 for k <= 2^17, so int32 accumulation is exact.

Importing this module imports triton; it raises `TritonUnavailableError` (an ImportError) only when triton is
not installed. Set TRITON_INTERPRET=1 before importing it to run the kernel on CPU tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from kernels.base import MSG_WORDS, ROT, check_operands
from kernels.triton_support import TritonUnavailableError, interpreting, tl, triton

__all__ = ["BlockConfig", "TritonUnavailableError", "default_config", "interpreting", "noisy_matmul_triton"]


_INTERPRET = interpreting()


@dataclass(frozen=True)
class BlockConfig:
    """Launch parameters. All block sizes are powers of two; block_k divides r.

    fold_reduce picks how the tile XOR is computed: True = `tl.reduce` (GPU default), False = a tree of
    elementwise XORs (interpreter default; the interpreter runs `tl.reduce` combiners one element at a time).
    Both give identical bits.
    """

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    fold_reduce: bool = True


def default_config(r: int, tile_h: int, tile_w: int, interpret: bool | None = None) -> BlockConfig:
    """Autotune-free defaults: 128x128 blocks, BLOCK_K = r on a GPU; 32x32 blocks in the interpreter."""
    if interpret is None:
        interpret = _INTERPRET
    if interpret:
        return BlockConfig(max(32, tile_h), max(32, tile_w), r, group_m=1, num_warps=1, num_stages=1, fold_reduce=False)
    # int8 operands: 128x128 blocks with BLOCK_K = 128 take 32 KiB of shared memory per stage.
    return BlockConfig(max(128, tile_h), max(128, tile_w), min(r, 128), group_m=8, num_warps=8, num_stages=3)


@triton.jit
def _xor_combine(x, y):
    return x ^ y


@triton.jit
def _tile_xor(acc, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
              TILE_LOG2: tl.constexpr, FOLD_REDUCE: tl.constexpr):
    """XOR of every TILE_H x TILE_W tile of acc (BLOCK_M, BLOCK_N): shape (tiles,), tiles row-major."""
    TILES: tl.constexpr = (BLOCK_M // TILE_H) * (BLOCK_N // TILE_W)
    x = tl.reshape(acc, (BLOCK_M // TILE_H, TILE_H, BLOCK_N // TILE_W, TILE_W))
    if FOLD_REDUCE:
        # Two tl.reduce passes (warp shuffles on a GPU; the interpreter calls the combiner per element).
        x = tl.reduce(x, 3, _xor_combine)
        x = tl.reduce(x, 1, _xor_combine)
    else:
        # The same fold as a halving tree of elementwise XORs (vectorized under the interpreter).
        x = tl.reshape(tl.permute(x, (0, 2, 1, 3)), (TILES, TILE_H * TILE_W))
        for i in tl.static_range(TILE_LOG2):
            lo, hi = tl.split(tl.reshape(x, (TILES, (TILE_H * TILE_W) >> (i + 1), 2)))
            x = lo ^ hi
    return tl.reshape(x, (TILES,))


@triton.jit
def _noisy_matmul_kernel(
    a_ptr, bt_ptr, c_ptr, msg_ptr,
    M, N, K,
    stride_am, stride_btn, stride_cm,
    R: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, ROT_BITS: tl.constexpr, WORDS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    TILE_LOG2: tl.constexpr, FOLD_REDUCE: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N block of C' and its tiles' messages.

    A (M x K) and C (M x N) are row-major; B is passed transposed, as row-major B^T (N x K), so that both
    operands are K-contiguous: 8-bit tensor-core MMAs want K-major operands in shared memory, and it lets
    B's tiles be copied asynchronously (pipelined) instead of being transposed through registers.
    """
    # Grouped program order so that neighbouring programs share rows of A in L2.
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    first_m = (pid // width) * GROUP_M
    group_size = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_size
    pid_n = (pid % width) // group_size
    row0 = pid_m * BLOCK_M
    col0 = pid_n * BLOCK_N

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = (row0 + offs_m) < M
    mask_n = (col0 + offs_n) < N
    # 64-bit block base offsets; in-block offsets stay 32-bit. Rows/columns past M/N load as zeros.
    a_ptrs = a_ptr + row0.to(tl.int64) * stride_am + (offs_m[:, None] * stride_am + offs_k[None, :])
    b_ptrs = bt_ptr + col0.to(tl.int64) * stride_btn + (offs_k[:, None] + offs_n[None, :] * stride_btn)

    TILES_M: tl.constexpr = BLOCK_M // TILE_H
    TILES_N: tl.constexpr = BLOCK_N // TILE_W
    N_TILES: tl.constexpr = TILES_M * TILES_N
    slots = tl.arange(0, WORDS)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    msgs = tl.zeros((N_TILES, WORDS), dtype=tl.uint32)
    for chunk in range(0, K // R):
        for _ in tl.static_range(R // BLOCK_K):
            a = tl.load(a_ptrs, mask=mask_m[:, None], other=0)
            b = tl.load(b_ptrs, mask=mask_n[None, :], other=0)
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        # Chunk boundary: fold S_chunk tile-wise in registers, then
        # msg[chunk % 16] = rotl32(msg[chunk % 16], 13) ^ x  (uint32, so >> is a logical shift).
        x = _tile_xor(acc, BLOCK_M, BLOCK_N, TILE_H, TILE_W, TILE_LOG2, FOLD_REDUCE).to(tl.uint32, bitcast=True)
        rotated = (msgs << ROT_BITS) | (msgs >> (32 - ROT_BITS))
        msgs = tl.where(slots[None, :] == chunk % WORDS, rotated ^ x[:, None], msgs)

    c_ptrs = c_ptr + row0.to(tl.int64) * stride_cm + col0 + (offs_m[:, None] * stride_cm + offs_n[None, :])
    tl.store(c_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])

    t = tl.arange(0, N_TILES)
    ti = pid_m * TILES_M + t // TILES_N
    tj = pid_n * TILES_N + t % TILES_N
    tiles_n_total = N // TILE_W
    tile_off = (ti.to(tl.int64) * tiles_n_total + tj) * WORDS
    tile_ok = (ti < M // TILE_H) & (tj < tiles_n_total)
    tl.store(msg_ptr + tile_off[:, None] + slots[None, :], msgs.to(tl.int32, bitcast=True), mask=tile_ok[:, None])


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _check_config(cfg: BlockConfig, r: int, tile_h: int, tile_w: int) -> None:
    for name in ("block_m", "block_n", "block_k", "group_m"):
        if not _is_pow2(getattr(cfg, name)):
            raise ValueError(f"{name}={getattr(cfg, name)} must be a power of two")
    if cfg.block_m % tile_h or cfg.block_n % tile_w:
        raise ValueError(f"block {cfg.block_m}x{cfg.block_n} is not a multiple of the tile {tile_h}x{tile_w}")
    if r % cfg.block_k:
        raise ValueError(f"block_k={cfg.block_k} does not divide r={r}")
    if not (_is_pow2(tile_h) and _is_pow2(tile_w)):
        raise ValueError(f"tile {tile_h}x{tile_w} must have power-of-two sides")


def noisy_matmul_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    r: int,
    tile_h: int,
    tile_w: int,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    config: BlockConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C', messages) per `kernels.base`, computed on a's device (CUDA; CPU only under TRITON_INTERPRET=1).

    Results stay on that device: C' is int32 (m, n), messages int32 (m/h, n/w, 16) holding uint32 bit patterns.
    block_m/block_n/block_k override the defaults (or pass a whole `config`).
    """
    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    if a.device != b.device:
        raise ValueError(f"operands on different devices: {a.device} and {b.device}")
    if a.device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"tensors on {a.device} need TRITON_INTERPRET=1 (set before importing this module)")
    cfg = config or default_config(r, tile_h, tile_w)
    cfg = replace(cfg, block_m=block_m or cfg.block_m, block_n=block_n or cfg.block_n, block_k=block_k or cfg.block_k)
    _check_config(cfg, r, tile_h, tile_w)

    c = torch.empty((m, n), dtype=torch.int32, device=a.device)
    msgs = torch.zeros((m // tile_h, n // tile_w, MSG_WORDS), dtype=torch.int32, device=a.device)
    if m == 0 or n == 0:
        return c, msgs
    if k == 0:
        return c.zero_(), msgs
    a = a.contiguous()
    bt = b.t().contiguous()  # K-major B: O(k*n) copy, negligible next to the m*k*n GEMM
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _noisy_matmul_kernel[grid](
        a, bt, c, msgs,
        m, n, k,
        a.stride(0), bt.stride(0), c.stride(0),
        R=r, TILE_H=tile_h, TILE_W=tile_w, ROT_BITS=ROT, WORDS=MSG_WORDS,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        TILE_LOG2=(tile_h * tile_w).bit_length() - 1, FOLD_REDUCE=cfg.fold_reduce,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return c, msgs

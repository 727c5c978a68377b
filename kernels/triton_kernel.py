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

import os
from dataclasses import dataclass, replace

import torch

from kernels.base import MSG_WORDS, ROT, check_operands
from kernels.triton_support import TritonUnavailableError, interpreting, tl, triton

__all__ = [
    "BlockConfig",
    "TritonUnavailableError",
    "default_config",
    "interpreting",
    "noisy_matmul_triton",
    "pack_correction",
    "plain_config",
]


_INTERPRET = interpreting()


@dataclass(frozen=True)
class BlockConfig:
    """Launch parameters. All block sizes are powers of two; block_k divides r.

    fold_reduce picks how the tile XOR is computed: True = `tl.reduce` (GPU default), False = a tree of
    elementwise XORs (interpreter default; the interpreter runs `tl.reduce` combiners one element at a time).
    fold_split (with fold_reduce, tiles at least 8 x 8) reduces each tile's in-thread values before the
    cross-lane ones (see `_tile_xor`). All give identical bits.
    """

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    fold_reduce: bool = True
    fold_split: bool = False

    def fold_mode(self, tile_h: int, tile_w: int) -> int:
        """The FOLD constant of `_tile_xor` for this config and tile."""
        if not self.fold_reduce:
            return 0
        return 2 if self.fold_split and tile_h >= 8 and tile_w >= 8 else 1


def default_config(r: int, tile_h: int, tile_w: int, interpret: bool | None = None) -> BlockConfig:
    """Autotune-free defaults: 64x128 blocks, BLOCK_K = min(r, 64) on a GPU; 32x32 blocks in the interpreter.
    POUW_TRITON_CONFIG="bm,bn,bk,warps,stages,fold_split" overrides the GPU default."""
    if interpret is None:
        interpret = _INTERPRET
    if interpret:
        return BlockConfig(max(32, tile_h), max(32, tile_w), r, group_m=1, num_warps=1, num_stages=1, fold_reduce=False)
    env = os.environ.get("POUW_TRITON_CONFIG")
    if env:  # "block_m,block_n,block_k,warps,stages,fold_split": an operator's (or the benchmark's) override
        try:
            bm, bn, bk, nw, ns, split = (int(v) for v in env.split(","))
        except ValueError:
            raise ValueError(f"POUW_TRITON_CONFIG={env!r}: expected six integers bm,bn,bk,warps,stages,split") from None
        return BlockConfig(bm, bn, min(bk, r), group_m=8, num_warps=nw, num_stages=ns, fold_split=bool(split))
    # The fastest measured with the transcript and the recovery epilogue (benchmarks/RESULTS.md, the H200 table):
    # 128x128 blocks with 4 warps spill the epilogue's second accumulator, and with 8 warps run slower. Small
    # blocks keep several programs on each SM, so one program's fold overlaps another's tensor-core work (Triton
    # waits for every MMA before the fold reads the accumulator).
    return BlockConfig(
        max(64, tile_h), max(128, tile_w), min(r, 64), group_m=8, num_warps=4, num_stages=4, fold_split=True
    )


def plain_config() -> BlockConfig:
    """The fastest config measured for the kernel with transcript and recovery off (benchmarks/RESULTS.md: on a
    par with or faster than torch._int_mm): the benchmark's 'engine plain GEMM'. Without the fold the large block
    has nothing to hide, and it reads each operand byte fewer times."""
    return BlockConfig(128, 128, 64, group_m=8, num_warps=4, num_stages=4, fold_split=True)


@triton.jit
def _xor_combine(x, y):
    return x ^ y


@triton.jit
def _tile_xor(
    acc,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    TILE_LOG2: tl.constexpr,
    FOLD: tl.constexpr,
):
    """XOR of every TILE_H x TILE_W tile of acc (BLOCK_M, BLOCK_N): shape (tiles,), tiles row-major.

    FOLD picks the order of the XORs (all give identical bits, XOR being associative and commutative):
      0: a halving tree of elementwise XORs (vectorized under the interpreter, which runs tl.reduce combiners
         one element at a time);
      1: two tl.reduce passes, over the tile's columns then its rows;
      2: (tiles at least 8 x 8) split each tile's rows as (TILE_H/8, 8) and columns as (TILE_W/8, 4, 2), which on
         Hopper's MMA accumulator layout puts the TILE_H/8, TILE_W/8 and 2 axes in one thread's registers and the
         8 and 4 axes across lanes: reduce the in-thread axes first, so the cross-lane shuffles act on 8x fewer
         values.
    """
    TILES: tl.constexpr = (BLOCK_M // TILE_H) * (BLOCK_N // TILE_W)
    if FOLD == 2:
        x = tl.reshape(acc, (BLOCK_M // TILE_H, TILE_H // 8, 8, BLOCK_N // TILE_W, TILE_W // 8, 4, 2))
        x = tl.reduce(x, 6, _xor_combine)
        x = tl.reduce(x, 4, _xor_combine)
        x = tl.reduce(x, 1, _xor_combine)  # (BM/TH, 8, BN/TW, 4)
        x = tl.reduce(x, 3, _xor_combine)
        x = tl.reduce(x, 1, _xor_combine)
    elif FOLD == 1:
        x = tl.reshape(acc, (BLOCK_M // TILE_H, TILE_H, BLOCK_N // TILE_W, TILE_W))
        x = tl.reduce(x, 3, _xor_combine)
        x = tl.reduce(x, 1, _xor_combine)
    else:
        x = tl.reshape(
            tl.permute(tl.reshape(acc, (BLOCK_M // TILE_H, TILE_H, BLOCK_N // TILE_W, TILE_W)), (0, 2, 1, 3)),
            (TILES, TILE_H * TILE_W),
        )
        for i in tl.static_range(TILE_LOG2):
            lo, hi = tl.split(tl.reshape(x, (TILES, (TILE_H * TILE_W) >> (i + 1), 2)))
            x = lo ^ hi
    return tl.reshape(x, (TILES,))


@triton.jit
def _noisy_matmul_kernel(
    a_ptr,
    bt_ptr,
    c_ptr,
    msg_ptr,
    u_ptr,
    vt_ptr,
    M,
    N,
    K,
    stride_am,
    stride_btn,
    stride_cm,
    stride_um,
    stride_vtn,
    R: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    ROT_BITS: tl.constexpr,
    WORDS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    TILE_LOG2: tl.constexpr,
    FOLD: tl.constexpr,
    TRANSCRIPT: tl.constexpr,
    DIGITS: tl.constexpr,
    CW: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N block of C' and its tiles' messages.

    With DIGITS > 0 the block stored is C = C' - sum_i 128^i U_i V_i instead (the recovery of `pouw.recover`,
    fused as an epilogue: C' never reaches memory). U (M x DIGITS*CW) holds U_0 .. U_{D-1} side by side and V is
    passed transposed as V^T (N x DIGITS*CW), both K-contiguous; the sum runs in Horner order in a second int32
    accumulator, wrapping mod 2^32 like the CPU path (the true result fits int32).

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
        if TRANSCRIPT:
            # Chunk boundary: fold S_chunk tile-wise in registers, then
            # msg[chunk % 16] = rotl32(msg[chunk % 16], 13) ^ x  (uint32, so >> is a logical shift).
            x = _tile_xor(acc, BLOCK_M, BLOCK_N, TILE_H, TILE_W, TILE_LOG2, FOLD).to(tl.uint32, bitcast=True)
            rotated = (msgs << ROT_BITS) | (msgs >> (32 - ROT_BITS))
            msgs = tl.where(slots[None, :] == chunk % WORDS, rotated ^ x[:, None], msgs)

    if DIGITS > 0:
        u_ptrs = u_ptr + row0.to(tl.int64) * stride_um + (offs_m[:, None] * stride_um + offs_k[None, :])
        v_ptrs = vt_ptr + col0.to(tl.int64) * stride_vtn + (offs_k[:, None] + offs_n[None, :] * stride_vtn)
        corr = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for i in tl.static_range(DIGITS):
            corr = corr * 128
            for kk in tl.static_range(CW // BLOCK_K):
                u = tl.load(u_ptrs + ((DIGITS - 1 - i) * CW + kk * BLOCK_K), mask=mask_m[:, None], other=0)
                v = tl.load(v_ptrs + ((DIGITS - 1 - i) * CW + kk * BLOCK_K), mask=mask_n[None, :], other=0)
                corr = tl.dot(u, v, corr, out_dtype=tl.int32)
        acc = acc - corr

    c_ptrs = c_ptr + row0.to(tl.int64) * stride_cm + col0 + (offs_m[:, None] * stride_cm + offs_n[None, :])
    tl.store(c_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])
    if TRANSCRIPT:
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
    transcript: bool = True,
    correction: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C', messages) per `kernels.base`, computed on a's device (CUDA; CPU only under TRITON_INTERPRET=1).

    Results stay on that device: C' is int32 (m, n), messages int32 (m/h, n/w, 16) holding uint32 bit patterns.
    block_m/block_n/block_k override the defaults (or pass a whole `config`). transcript=False skips the fold
    (messages stay zero): the engine's plain int8 GEMM, which the benchmark compares against.
    correction=(U, V^T, digits) (see `pack_correction`) makes the kernel return the recovered C instead of C'.
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
        if correction is not None:
            raise ValueError("a correction needs k > 0")
        return c.zero_(), msgs
    a = a.contiguous()
    bt = b.t().contiguous()  # K-major B: free when b is already a transposed view of a K-major buffer
    if correction is not None:
        u, vt, digits = correction
        if u.dtype != torch.int8 or vt.dtype != torch.int8 or u.device != a.device or vt.device != a.device:
            raise ValueError("correction operands must be int8 tensors on the operands' device")
        if u.shape[0] != m or vt.shape[0] != n or u.shape[1] != vt.shape[1] or digits <= 0 or u.shape[1] % digits:
            raise ValueError(
                f"correction operands {tuple(u.shape)}, {tuple(vt.shape)} with {digits} digits "
                f"do not fit a {m} x {n} product"
            )
        cw = u.shape[1] // digits
        if cw % cfg.block_k:
            raise ValueError(f"correction width {cw} is not a multiple of block_k={cfg.block_k}")
        u, vt = u.contiguous(), vt.contiguous()
    else:
        u, vt, digits, cw = a, bt, 0, cfg.block_k
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _noisy_matmul_kernel[grid](
        a,
        bt,
        c,
        msgs,
        u,
        vt,
        m,
        n,
        k,
        a.stride(0),
        bt.stride(0),
        c.stride(0),
        u.stride(0),
        vt.stride(0),
        R=r,
        TILE_H=tile_h,
        TILE_W=tile_w,
        ROT_BITS=ROT,
        WORDS=MSG_WORDS,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        GROUP_M=cfg.group_m,
        TILE_LOG2=(tile_h * tile_w).bit_length() - 1,
        FOLD=cfg.fold_mode(tile_h, tile_w),
        TRANSCRIPT=transcript,
        DIGITS=digits,
        CW=cw,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return c, msgs


def pack_correction(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """[(U_i (m x w), V_i (w x n))] (`pouw.recover.correction_operands`) -> (U, V^T, digits) for the epilogue.

    U = [U_0 | U_1 | ...] (m x D*w) and V^T = [V_0^T | V_1^T | ...] (n x D*w), both contiguous int8.
    """
    if not pairs:
        raise ValueError("no correction operands")
    widths = {u.shape[1] for u, _ in pairs} | {v.shape[0] for _, v in pairs}
    if len(widths) != 1:
        raise ValueError(f"correction operands of unequal widths {sorted(widths)}")
    u = torch.cat([u for u, _ in pairs], dim=1).contiguous()
    vt = torch.cat([v.t() for _, v in pairs], dim=1).contiguous()
    return u, vt, len(pairs)

"""Triton kernels: the mining noise added to the int8 operands on the device, one memory pass per operand.

    A'[u][l] = A[u][l] + E_L[u][p_A(l)]        (A' = A + E_L · P)
    B'[l][v] = B[l][v] + F_R[p_B(l)][v]        (B' = B + Q · F_R)

p_A, p_B are the protocol's noise maps (pouw.noise.noise_map); any indices in [0, r) are accepted.

This is the optional `add_noise` of the backend contract (`kernels.base`); the generic path is
`pouw.noise_torch.noisy_operands`, and results are identical to it, entry for entry.

Both kernels are memory-bound: A and B are read once and A', B' written once (2 bytes per entry each way);
E_L (m x r) and F_R (r x n) are small and are read from cache.

  * A kernel: each program owns a BLOCK_M x BLOCK_K block of A (loaded and stored coalesced along k) and loads
    the block's p_A once. The noise block E_L[rows, :] · P[:, cols] is formed one of three ways
    (`NoiseConfig.a_mode`): "dot" (default) builds the block's r x BLOCK_K slice of the one-hot map in
    registers and multiplies it by the block's rows of E_L with an exact int8 `tl.dot` (tensor cores; the
    E_L rows load coalesced); "gather" loads E_L[u, p_A(l)] entry by entry (byte gathers along k: uncoalesced
    byte loads, several times slower on a GPU); "trans" gathers along u from a column-major copy of E_L and transposes the difference.
  * B kernel: each program owns a BLOCK_K x BLOCK_N block of B (coalesced along n). The noise block is
    Q[rows, :] · F_R[:, cols] as a one-hot `tl.dot` ("dot", default) or the gathered rows F_R[p_B(l), v]
    ("gather", coalesced along v). The sum is stored transposed (`tl.trans`) into B'^T
    (n x k, row-major), so the store is coalesced along k. The fused GEMM wants B' K-major, so B' is returned
    as the (k, n) transposed view of that buffer: no separate transpose pass (64 MiB at 8192^3).

Arithmetic: sums are exact (int16 for gathered entries, int32 for the tl.dot products, whose one-hot operand
has entries in {0, 1}), and the cast back to int8 truncates (wraps mod 256) as `noisy_operands`'
int32 -> int8 `.to` does, so results agree even for inputs whose sums leave [-128, 127]
(the protocol's inputs never do: |A|, |B| <= 64 and |E|, |F| <= 32).

Offsets: block bases are 64-bit (m * k reaches 2^32 at 65536 x 65536); in-block offsets stay 32-bit.
Programs are numbered on a 1-D grid (no 65535 limit on grid axes 1 and 2).

Importing this module imports triton; it raises `TritonUnavailableError` (an ImportError) only when triton is
not installed. Set TRITON_INTERPRET=1 before importing it to run the kernels on CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kernels.base import ShapeError
from kernels.triton_support import TritonUnavailableError, interpreting, tl, triton

__all__ = [
    "NoiseConfig",
    "ShapeError",
    "TritonUnavailableError",
    "add_noise_triton",
    "default_noise_config",
    "interpreting",
]


_INTERPRET = interpreting()


A_MODES = ("gather", "trans", "dot")
B_MODES = ("gather", "dot")


@dataclass(frozen=True)
class NoiseConfig:
    """Launch parameters. Block sizes are powers of two: A blocks a_block_m x a_block_k, B blocks
    b_block_k x b_block_n. The modes pick how the noise block is formed (all give identical results):

      * "gather": per-entry loads E_L[u, p(l)] (A: byte gathers along k; B: rows of F_R, vector loads along n);
      * "trans" (A only): the gathers run along u from a column-major copy of E_L, coalesced, and the
        (BLOCK_K, BLOCK_M) difference is transposed in registers (through shared memory on a GPU);
      * "dot": the block's slice of the one-hot map (1 at p(l); r x BLOCK_K) is built in
        registers and multiplied by the block's rows of E_L (or columns of F_R) as an exact int8 tl.dot
        (inner width r padded to a power of two >= 32, as int8 MMAs need; blocks need sides >= 16).
    """

    a_block_m: int
    a_block_k: int
    b_block_k: int
    b_block_n: int
    num_warps: int = 4
    a_mode: str = "gather"
    b_mode: str = "gather"


def default_noise_config(interpret: bool | None = None) -> NoiseConfig:
    """On a GPU: 64x128 A blocks in "dot" mode, 64x128 B blocks in "gather" mode, 4 warps: the fastest
    combination measured (benchmarks/RESULTS.md, "Measurements moved out of the code"), close to a plain copy of
    A and B. For A the one-hot tl.dot beats gathers (byte gathers along k are uncoalesced; "trans" pays for the
    transpose); for B the gathered rows of F_R are already coalesced along n, so "dot" gains nothing there.
    In the interpreter: 16x32 / 32x16 blocks, so that small test shapes still span several ragged blocks."""
    if interpret is None:
        interpret = _INTERPRET
    if interpret:
        return NoiseConfig(16, 32, 32, 16, num_warps=1, a_mode="dot", b_mode="gather")
    return NoiseConfig(64, 128, 64, 128, num_warps=4, a_mode="dot", b_mode="gather")


@triton.jit
def _noise_a_kernel(
    a_ptr,
    e_ptr,
    p_ptr,
    out_ptr,
    M,
    K,
    R,
    stride_am,
    stride_ak,
    stride_em,
    stride_er,
    stride_om,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    R_PAD: tl.constexpr,
    MODE: tl.constexpr,
):
    """out[u, l] = a[u, l] + e[u, p[l]] for one BLOCK_M x BLOCK_K block (out row-major).

    MODE 0: gather along k; 1: gather along u (e column-major) and transpose; 2: one-hot tl.dot.
    """
    pid = tl.program_id(0)
    grid_k = tl.cdiv(K, BLOCK_K)
    pid_m = pid // grid_k  # neighbouring programs walk along k in the same rows (E_L rows stay in L1)
    pid_k = pid % grid_k
    row0 = pid_m.to(tl.int64) * BLOCK_M
    col0 = pid_k.to(tl.int64) * BLOCK_K

    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = (row0 + offs_m) < M
    mask_k = (col0 + offs_k) < K
    mask = mask_m[:, None] & mask_k[None, :]

    p = tl.load(p_ptr + col0 + offs_k, mask=mask_k, other=0)
    a_ptrs = a_ptr + (row0 * stride_am + col0 * stride_ak) + (offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak)
    a = tl.load(a_ptrs, mask=mask, other=0)
    e_base = e_ptr + row0 * stride_em
    if MODE == 0:
        e_rows = e_base + offs_m[:, None] * stride_em
        e_p = tl.load(e_rows + p[None, :] * stride_er, mask=mask, other=0)
        out = (a.to(tl.int16) + e_p.to(tl.int16)).to(tl.int8)
    elif MODE == 1:
        mask_t = mask_k[:, None] & mask_m[None, :]
        e_cols = e_base + offs_m[None, :] * stride_em
        e_p = tl.load(e_cols + p[:, None] * stride_er, mask=mask_t, other=0)
        d = tl.trans(e_p)
        out = (a.to(tl.int16) + d.to(tl.int16)).to(tl.int8)
    else:
        offs_r = tl.arange(0, R_PAD)
        e = tl.load(
            e_base + offs_m[:, None] * stride_em + offs_r[None, :] * stride_er,
            mask=mask_m[:, None] & (offs_r[None, :] < R),
            other=0,
        )
        onehot = (offs_r[:, None] == p[None, :]).to(tl.int8)
        noise = tl.dot(e, onehot, out_dtype=tl.int32)  # exact: |entries| <= 128
        out = (a.to(tl.int32) + noise).to(tl.int8)
    tl.store(out_ptr + (row0 * stride_om + col0) + (offs_m[:, None] * stride_om + offs_k[None, :]), out, mask=mask)


@triton.jit
def _noise_bt_kernel(
    b_ptr,
    f_ptr,
    p_ptr,
    bt_ptr,
    K,
    N,
    R,
    stride_bk,
    stride_bn,
    stride_fr,
    stride_fn,
    stride_btn,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    R_PAD: tl.constexpr,
    MODE: tl.constexpr,
):
    """bt[v, l] = b[l, v] + f[p[l], v] for one BLOCK_K x BLOCK_N block of b (bt row-major n x k).

    MODE 0: gather rows of f; 2: one-hot tl.dot.
    """
    pid = tl.program_id(0)
    grid_n = tl.cdiv(N, BLOCK_N)
    pid_k = pid // grid_n
    pid_n = pid % grid_n
    row0 = pid_k.to(tl.int64) * BLOCK_K
    col0 = pid_n.to(tl.int64) * BLOCK_N

    offs_k = tl.arange(0, BLOCK_K)
    offs_n = tl.arange(0, BLOCK_N)
    mask_k = (row0 + offs_k) < K
    mask_n = (col0 + offs_n) < N
    mask = mask_k[:, None] & mask_n[None, :]

    p = tl.load(p_ptr + row0 + offs_k, mask=mask_k, other=0)
    b_ptrs = b_ptr + (row0 * stride_bk + col0 * stride_bn) + (offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn)
    b = tl.load(b_ptrs, mask=mask, other=0)
    f_cols = f_ptr + col0 * stride_fn + offs_n[None, :] * stride_fn
    if MODE == 0:
        f_p = tl.load(f_cols + p[:, None] * stride_fr, mask=mask, other=0)
        out = (b.to(tl.int16) + f_p.to(tl.int16)).to(tl.int8)
    else:
        offs_r = tl.arange(0, R_PAD)
        f = tl.load(f_cols + offs_r[:, None] * stride_fr, mask=(offs_r[:, None] < R) & mask_n[None, :], other=0)
        onehot = (p[:, None] == offs_r[None, :]).to(tl.int8)
        noise = tl.dot(onehot, f, out_dtype=tl.int32)
        out = (b.to(tl.int32) + noise).to(tl.int8)
    # Transposed in registers (through shared memory on a GPU) so that the store runs along k.
    out_t = tl.trans(out)
    bt_ptrs = bt_ptr + (col0 * stride_btn + row0) + (offs_n[:, None] * stride_btn + offs_k[None, :])
    tl.store(bt_ptrs, out_t, mask=mask_n[:, None] & mask_k[None, :])


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _check_int8_matrix(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ShapeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if t.dtype != torch.int8:
        raise ShapeError(f"{name} must be int8, got {t.dtype}")
    if t.dim() != 2:
        raise ShapeError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    return t


def _check_index(name: str, idx: object, k: int, bound: int) -> torch.Tensor:
    """A length-k integer index vector as a torch tensor. Values are range-checked unless it is a CUDA tensor
    already (that check would synchronize the device; the maps come from the host in practice)."""
    if isinstance(idx, torch.Tensor):
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise ShapeError(f"{name} must hold integers, got {idx.dtype}")
        t = idx
    else:
        arr = np.asarray(idx)
        if arr.dtype.kind not in "iu":
            raise ShapeError(f"{name} must hold integers, got {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dim() != 1 or t.shape[0] != k:
        raise ShapeError(f"{name} must be a vector of length k={k}, got shape {tuple(t.shape)}")
    if t.device.type != "cuda" and k > 0:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= bound:
            raise ShapeError(f"{name} values must lie in [0, {bound}), got [{lo}, {hi}]")
    return t


def _device_indices(idx: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The index vectors as contiguous int32 / int64 tensors on `device`. Host vectors are narrowed to
    int32 and moved in one copy (each pageable host-to-device copy stalls the host); device vectors that
    are already int32 or int64 and contiguous are used as they are (the kernels load either)."""
    if all(t.device == device and t.dtype in (torch.int32, torch.int64) and t.is_contiguous() for t in idx):
        return idx
    if all(t.device.type == "cpu" for t in idx):
        return list(torch.stack([t.to(torch.int32) for t in idx]).to(device).unbind(0))
    return [torch.as_tensor(t, device=device).to(torch.int32).contiguous() for t in idx]


def add_noise_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    e_l: torch.Tensor,
    f_r: torch.Tensor,
    p_a,
    p_b,
    *,
    config: NoiseConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') = (A + E_L·P, B + Q·F_R) on a's device (CUDA; CPU only under TRITON_INTERPRET=1).

    a (m, k), b (k, n), e_l (m, r), f_r (r, n): int8 tensors, any strides, all on one device. p_a indexes
    E_L's columns and p_b F_R's rows: length-k integer vectors (numpy arrays or torch tensors on any
    device) with values in [0, r), checked unless they are CUDA tensors already.
    Bad operands (dtype, rank, shapes, index lengths or values) raise `ShapeError` (a ValueError), as the
    native `add_noise` does; tensors on different devices, CPU tensors without TRITON_INTERPRET=1 and bad
    block sizes raise ValueError.
    Returns A' as a contiguous (m, k) int8 tensor and B' as the (k, n) transposed view of a contiguous (n, k)
    int8 buffer (`b2.t().is_contiguous()`), equal entry for entry to `pouw.noise_torch.noisy_operands`.
    """
    a = _check_int8_matrix("a", a)
    b = _check_int8_matrix("b", b)
    e_l = _check_int8_matrix("e_l", e_l)
    f_r = _check_int8_matrix("f_r", f_r)
    m, k = a.shape
    if b.shape[0] != k:
        raise ShapeError(f"shape mismatch: a is {tuple(a.shape)} but b is {tuple(b.shape)} (need b.shape[0] == k)")
    n = b.shape[1]
    if e_l.shape[0] != m:
        raise ShapeError(f"e_l must have m={m} rows, got shape {tuple(e_l.shape)}")
    if f_r.shape[1] != n:
        raise ShapeError(f"f_r must have n={n} columns, got shape {tuple(f_r.shape)}")
    r = e_l.shape[1]
    if f_r.shape[0] != r:
        raise ShapeError(f"rank mismatch: e_l is {tuple(e_l.shape)} but f_r is {tuple(f_r.shape)} (need the same r)")
    if r == 0:
        raise ShapeError("e_l and f_r have r=0 columns/rows: the rank r must be positive")
    for name, t in (("b", b), ("e_l", e_l), ("f_r", f_r)):
        if t.device != a.device:
            raise ValueError(f"{name} is on {t.device} but a is on {a.device}: all tensors must share one device")
    cfg = config or default_noise_config()
    for name in ("a_block_m", "a_block_k", "b_block_k", "b_block_n", "num_warps"):
        if not _is_pow2(getattr(cfg, name)):
            raise ValueError(f"{name}={getattr(cfg, name)} must be a power of two")
    if cfg.a_mode not in A_MODES or cfg.b_mode not in B_MODES:
        raise ValueError(
            f"a_mode must be one of {A_MODES} and b_mode one of {B_MODES}, got {cfg.a_mode!r}, {cfg.b_mode!r}"
        )
    if (cfg.a_mode == "dot" and min(cfg.a_block_m, cfg.a_block_k) < 16) or (
        cfg.b_mode == "dot" and min(cfg.b_block_k, cfg.b_block_n) < 16
    ):
        raise ValueError("the dot modes need blocks with sides >= 16")
    idx = [_check_index(name, t, k, r) for name, t in (("p_a", p_a), ("p_b", p_b))]
    if a.device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"tensors on {a.device} need TRITON_INTERPRET=1 (set before importing this module)")
    p_a_t, p_b_t = _device_indices(idx, a.device)

    a2 = torch.empty((m, k), dtype=torch.int8, device=a.device)
    bt = torch.empty((n, k), dtype=torch.int8, device=a.device)
    if k == 0:
        return a2, bt.t()
    r_pad = max(32, 1 << (r - 1).bit_length())  # int8 tl.dot needs an inner width >= 32
    if m > 0:
        if cfg.a_mode == "trans" and e_l.stride(0) != 1:
            e_l = e_l.t().contiguous().t()  # column-major: m * r bytes, negligible
        grid = (triton.cdiv(m, cfg.a_block_m) * triton.cdiv(k, cfg.a_block_k),)
        _noise_a_kernel[grid](
            a,
            e_l,
            p_a_t,
            a2,
            m,
            k,
            r,
            a.stride(0),
            a.stride(1),
            e_l.stride(0),
            e_l.stride(1),
            a2.stride(0),
            BLOCK_M=cfg.a_block_m,
            BLOCK_K=cfg.a_block_k,
            R_PAD=r_pad,
            MODE=A_MODES.index(cfg.a_mode),
            num_warps=cfg.num_warps,
        )
    if n > 0:
        grid = (triton.cdiv(k, cfg.b_block_k) * triton.cdiv(n, cfg.b_block_n),)
        _noise_bt_kernel[grid](
            b,
            f_r,
            p_b_t,
            bt,
            k,
            n,
            r,
            b.stride(0),
            b.stride(1),
            f_r.stride(0),
            f_r.stride(1),
            bt.stride(0),
            BLOCK_K=cfg.b_block_k,
            BLOCK_N=cfg.b_block_n,
            R_PAD=r_pad,
            MODE=2 if cfg.b_mode == "dot" else 0,
            num_warps=cfg.num_warps,
        )
    return a2, bt.t()

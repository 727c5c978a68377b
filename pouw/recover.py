"""Recover the client's exact C = A·B from the noisy product C' = A'·B'.

    A'B' = (A + E)(B + F) = AB + A·F + E·B'      so      C = C' - A·F - E·B'
    A·F  = (A·Q)·F_R,   E·B' = E_L·(P·B')         (P, Q the noise maps; A·Q and P·B' are m x r and r x n)

Each chunk of a map is a permutation, so an entry of A·Q sums k/r entries of A (one per chunk): |A·Q| <= 64 k/r,
and an entry of P·B' k/r entries of B': P·B' in [-96 k/r, 95 k/r].

A·Q and P·B' no longer fit int8, so they are split into signed base-128 digits in [-64, 63] and the correction is
sum_i 128^i · [AQ_i | E_L] · [F_R ; PB_i]  : a few int8 GEMMs of inner width 2r. Extra cost ~ 2r/k · digits.
The miner fixes the number of digits from k, r and those bounds (`recovery_digits`), never from the data: on a
device, finding the data's count costs a host round trip per digit, and a fused kernel compiles the count in.
All intermediates fit int32 for k <= MAX_K (see docs/protocol.md).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from kernels.base import digit_count
from pouw.noise_torch import MatMul, Noise
from pouw.params import NOISE_MAX, OPERAND_MAX


def recovery_digits(k: int, r: int, operand_max: int = OPERAND_MAX, noise_max: int = NOISE_MAX) -> int:
    """How many signed base-128 digits the recovery splits A·Q and P·B' into: a function of k, r and the value
    bounds alone (1 <= r, r | k), enough for every job the protocol allows, whatever its data.

    Proof. Every chunk map[c·r : (c+1)·r] of a noise map is a permutation of [0, r) (`pouw.noise.noise_map`), so
    for each j and each of the k/r chunks c exactly one column l of the chunk has Q[l][j] = 1 (and one row l has
    P[j][l] = 1). Hence
        (A·Q)[u][j]  = sum over c of A[u][l_c]     k/r entries of A,  each in [-operand_max, operand_max]
        (P·B')[j][v] = sum over c of B'[l_c][v]    k/r entries of B', each in [-operand_max - noise_max,
                                                                               operand_max + noise_max - 1]
    (A is the client's operand, range-checked by `pouw.job.check_operands`; B' = B + F with F's entries in
    [-noise_max, noise_max - 1]). Both lie in [lo, hi] = [-(operand_max + noise_max) k/r,
    (operand_max + noise_max - 1) k/r] = [-96 k/r, 95 k/r], since noise_max >= 1 puts A·Q's range inside it; and D
    digits hold exactly [-64 S_D, 63 S_D], S_D = (128^D - 1)/127 (`kernels.base.digit_count`), so
    D = digit_count(lo, hi) digits hold every entry. The bound is tight for these ranges: B' all 95 (or all -96) makes P·B' = hi (or lo)
    everywhere, so no smaller count fixed in advance covers them. With the default bounds:
    2 digits for k/r <= 85, 3 for 86 <= k/r <= 10950; minable shapes (r >= 8, k <= 65536) never need a fourth.
    """
    if r < 1 or k < 0 or k % r:
        raise ValueError(f"k={k} must be a non-negative multiple of r={r} >= 1")
    q = k // r
    return digit_count(-(operand_max + noise_max) * q, (operand_max + noise_max - 1) * q)


def split128(x: torch.Tensor, digits: int) -> torch.Tensor:
    """x (integer tensor) as exactly `digits` signed base-128 digits: int8 (digits, *x.shape), each in [-64, 63],
    with x == sum_i d_i 128^i, computed without looking at the data (no host round trip on a device).

    With S = (128^D - 1)/127, x + 64 S lies in [0, 128^D) for every x in [-64 S, 63 S] (`kernels.base.digit_count`);
    its unsigned base-128 digits minus 64 are the signed ones. That representation is unique, so these are
    `digits128`'s digits followed by zeros. Values outside [-64 S, 63 S] raise ValueError on the CPU; on a device
    they are not checked (that check is the round trip this avoids), and the caller's bound must hold
    (`recovery_digits`)."""
    if digits < 1:
        raise ValueError(f"digits={digits} must be at least 1")
    s = (128**digits - 1) // 127
    wide = torch.int32 if digits <= 4 else torch.int64  # 128^4 < 2^31: x + 64 S and its shifts fit int32
    y = x.to(wide) + 64 * s
    if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) > 127 * s):
        raise ValueError(f"values outside [{-64 * s}, {63 * s}] do not fit {digits} base-128 digits")
    shifts = torch.arange(0, 7 * digits, 7, dtype=wide, device=x.device).view(digits, *([1] * x.dim()))
    out: torch.Tensor = ((y.unsqueeze(0) >> shifts) & 127) - 64  # (torch types `>>` as Any)
    return out.to(torch.int8)


def digits128(x: torch.Tensor) -> list[torch.Tensor]:
    """Signed base-128 digits (int8, each in [-64, 63]) with x == sum_i d_i * 128^i. At least one digit.

    On the CPU this runs in numpy: the operands are small (m x r, r x n) and a dozen torch elementwise ops
    would each wake torch's thread pool, costing more than the arithmetic.
    """
    if x.device.type == "cpu":
        v = x.numpy().astype(np.int32)
        digits = []
        while True:
            dv = ((v + 64) & 127) - 64
            digits.append(torch.from_numpy(dv.astype(np.int8)))
            v = (v - dv) >> 7
            if not v.any():
                return digits
    x = x.to(torch.int32).clone()
    out = []
    while True:
        d = ((x + 64) & 127) - 64
        out.append(d.to(torch.int8))
        x = (x - d) >> 7
        if not bool(x.any()):
            return out


def correction_operands(
    a: torch.Tensor,
    b_noisy: torch.Tensor,
    nz: Noise,
    matmul: MatMul,
    native: Callable[..., list[tuple[torch.Tensor, torch.Tensor]]] | None = None,
    digits: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(U_i, V_i)] with A·F + E·B' = sum_i 128^i · U_i · V_i; U_i (m x 2r), V_i (2r x n) int8, contiguous.

    digits: how many pairs: exactly that many (`recovery_digits(k, r)`, which the miner passes: no data-dependent
    step, so nothing waits for a device), or None for the fewest that hold A·Q and P·B' (`digits128`: one host
    round trip per digit on a device). Either way the sum, hence C, is the same: extra digits are zero.
    `native(a, b_noisy, e_l, f_r, map_a, map_b)` (optional, a CPU backend's `correction_operands`) returns the same
    sum computed its own way, with the data's count (found in the same pass over A and B', on the host)."""
    if native is not None:
        return native(a, b_noisy, nz.e_l, nz.f_r, *nz.maps)
    aq = matmul(a, nz.q_mat)  # m x r, = A·Q
    pb = matmul(nz.p_mat, b_noisy)  # r x n, = P·B'
    if digits is not None:
        da, db = split128(aq, digits), split128(pb, digits)
        return [
            (torch.cat([da[i], nz.e_l], dim=1).contiguous(), torch.cat([nz.f_r, db[i]], dim=0).contiguous())
            for i in range(digits)
        ]
    dl, dr = digits128(aq), digits128(pb)
    zero_a = torch.zeros_like(dl[0])
    zero_b = torch.zeros_like(dr[0])
    out = []
    for i in range(max(len(dl), len(dr))):
        u = torch.cat([dl[i] if i < len(dl) else zero_a, nz.e_l], dim=1).contiguous()
        v = torch.cat([nz.f_r, dr[i] if i < len(dr) else zero_b], dim=0).contiguous()
        out.append((u, v))
    return out


def correction(a: torch.Tensor, b_noisy: torch.Tensor, nz: Noise, matmul: MatMul) -> torch.Tensor:
    """A·F + E·B' (int32, m x n) using int8 GEMMs via `matmul` (int8 x int8 -> int32, same device)."""
    total = None
    for i, (u, v) in enumerate(correction_operands(a, b_noisy, nz, matmul)):
        term = matmul(u, v)
        if total is None:
            total = term if i == 0 else term.mul_(128**i)
        else:
            total.add_(term, alpha=128**i)
    assert total is not None
    return total


def recover(c_noisy: torch.Tensor, a: torch.Tensor, b_noisy: torch.Tensor, nz: Noise, matmul: MatMul) -> torch.Tensor:
    """Exact C = A·B (int32) from C' = A'·B' with `matmul`'s GEMMs. Overwrites and returns `c_noisy`.

    A backend with `sub_correction` (kernels/base.py) does the same in one pass over C; pouw.miner then calls it
    on the pairs of `correction_operands`."""
    return c_noisy.sub_(correction(a, b_noisy, nz, matmul))

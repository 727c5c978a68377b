"""Recover the client's exact C = A·B from the noisy product C' = A'·B'.

    A'B' = (A + E)(B + F) = AB + A·F + E·B'      so      C = C' - A·F - E·B'
    A·F  = (A·Q)·F_R,   E·B' = E_L·(P·B')         (P, Q the noise maps; A·Q and P·B' are m x r and r x n)

Each chunk of a map is a permutation, so an entry of A·Q sums k/r entries of A (one per chunk): |A·Q| <= 64 k/r,
|P·B'| <= 96 k/r.

A·Q and P·B' no longer fit int8, so they are split into signed base-128 digits in [-64, 63] and the correction
is  sum_i 128^i · [AQ_i | E_L] · [F_R ; PB_i]  : a few int8 GEMMs of inner width 2r. Extra cost ~ 2r/k · digits.
All intermediates fit int32 for k <= MAX_K (see docs/protocol.md).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pouw.noise_torch import MatMul, Noise


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


def correction_operands(a: torch.Tensor, b_noisy: torch.Tensor, nz: Noise, matmul: MatMul,
                        native: Callable[..., list[tuple[torch.Tensor, torch.Tensor]]] | None = None
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(U_i, V_i)] with A·F + E·B' = sum_i 128^i · U_i · V_i; U_i (m x 2r), V_i (2r x n) int8, contiguous.

    `native(a, b_noisy, e_l, f_r, map_a, map_b)` (optional, a backend's `correction_operands`) returns the
    same operands computed its own way."""
    if native is not None:
        return native(a, b_noisy, nz.e_l, nz.f_r, *nz.maps)
    aq = matmul(a, nz.q_mat)                                     # m x r, = A·Q
    pb = matmul(nz.p_mat, b_noisy)                               # r x n, = P·B'
    da, db = digits128(aq), digits128(pb)
    zero_a = torch.zeros_like(da[0])
    zero_b = torch.zeros_like(db[0])
    out = []
    for i in range(max(len(da), len(db))):
        u = torch.cat([da[i] if i < len(da) else zero_a, nz.e_l], dim=1).contiguous()
        v = torch.cat([nz.f_r, db[i] if i < len(db) else zero_b], dim=0).contiguous()
        out.append((u, v))
    return out


def correction(a: torch.Tensor, b_noisy: torch.Tensor, nz: Noise, matmul: MatMul) -> torch.Tensor:
    """A·F + E·B' (int32, m x n) using int8 GEMMs via `matmul` (int8 x int8 -> int32, same device)."""
    total = None
    for i, (u, v) in enumerate(correction_operands(a, b_noisy, nz, matmul)):
        term = matmul(u, v)
        if total is None:
            total = term if i == 0 else term.mul_(128 ** i)
        else:
            total.add_(term, alpha=128 ** i)
    assert total is not None
    return total


def recover(c_noisy: torch.Tensor, a: torch.Tensor, b_noisy: torch.Tensor, nz: Noise, matmul: MatMul) -> torch.Tensor:
    """Exact C = A·B (int32) from C' = A'·B' with `matmul`'s GEMMs. Overwrites and returns `c_noisy`.

    A backend with `sub_correction` (kernels/base.py) does the same in one pass over C; pouw.miner then calls it
    on the pairs of `correction_operands`."""
    return c_noisy.sub_(correction(a, b_noisy, nz, matmul))

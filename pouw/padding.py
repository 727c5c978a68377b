"""Fit any int8 operands to a minable shape: zero-pad (m, k, n) up to the tile, r and minimum-k grid.

Zero rows/columns change nothing in the product: crop(C_padded) == A·B exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from pouw.job import check_operands
from pouw.params import MAX_DIM, MAX_K, PowParams
from pouw.errors import JobError


def _round_up(x: int, mult: int) -> int:
    return -(-x // mult) * mult


def padded_shape(m: int, k: int, n: int, params: PowParams) -> tuple[int, int, int]:
    pm = _round_up(m, params.tile_h)
    pk = max(params.min_k, _round_up(k, params.rank))
    pn = _round_up(n, params.tile_w)
    if pk > MAX_K or pm > MAX_DIM or pn > MAX_DIM:
        raise JobError(f"job {m}x{k}x{n} is too large (k <= {MAX_K}, m, n <= {MAX_DIM})")
    return pm, pk, pn


def pad_operands(a: Any, b: Any, params: PowParams) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """Check the client's operands, then zero-pad. Returns (A_pad, B_pad, original (m, k, n))."""
    ta, tb = check_operands(a, b)
    m, k = ta.shape
    n = tb.shape[1]
    pm, pk, pn = padded_shape(m, k, n, params)
    ap = torch.zeros(pm, pk, dtype=torch.int8)
    ap[:m, :k] = ta
    bp = torch.zeros(pk, pn, dtype=torch.int8)
    bp[:k, :n] = tb
    return ap, bp, (m, k, n)


def crop(c: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    m, _, n = shape
    return c[:m, :n].contiguous()

"""Replay of one tile's transcript from its opened rows and columns (what a verifier computes)."""

from __future__ import annotations

import numpy as np

from kernels.base import MSG_WORDS, ROT


def _max_abs(x: np.ndarray) -> int:
    """max |x| as a Python int (no wrap-around at -128 / -32768)."""
    return max(-int(x.min(initial=0)), int(x.max(initial=0)))


def tile_message(a_rows: np.ndarray, b_cols: np.ndarray, r: int) -> np.ndarray:
    """a_rows: (h, k) noisy rows of A', b_cols: (w, k) noisy columns of B' (int8/int16) -> 16 uint32 words.

    Partial sums after each chunk are exact int64 (|S| < 2^30). Each chunk product is a sum of r integer products,
    exact in float32 while max|a| * max|b| * r < 2^24 (so for r <= 1040 with entries in [-127, 127]) and in
    float64 otherwise; the smaller type halves the memory the BLAS call streams.
    """
    h, k = a_rows.shape
    w = b_cols.shape[0]
    nc = k // r
    bound = _max_abs(a_rows) * _max_abs(b_cols) * r
    ft = np.float32 if bound < 1 << 24 else np.float64
    a3 = a_rows.astype(ft).reshape(h, nc, r).transpose(1, 0, 2)  # nc, h, r
    b3 = b_cols.astype(ft).reshape(w, nc, r).transpose(1, 2, 0)  # nc, r, w
    prods = np.matmul(a3, b3).astype(np.int64)  # nc, h, w
    sums = np.cumsum(prods, axis=0).astype(np.uint32).reshape(nc, h * w)  # wraps mod 2^32
    xs = np.bitwise_xor.reduce(sums, axis=1)
    msg = [0] * MSG_WORDS
    for c in range(nc):
        s = c % MSG_WORDS
        v = msg[s]
        msg[s] = (((v << ROT) | (v >> (32 - ROT))) & 0xFFFFFFFF) ^ int(xs[c])
    return np.array(msg, dtype=np.uint32)

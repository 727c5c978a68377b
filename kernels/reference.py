"""Slow, obviously-correct reference of the kernel contract in `kernels.base` (pure Python ints).

Use only on small shapes: it exists so tests can compare every fast backend against it.
"""

from __future__ import annotations

import torch

from kernels.base import MSG_WORDS, ROT, check_operands


def _rotl(x: int, s: int = ROT) -> int:
    return ((x << s) | (x >> (32 - s))) & 0xFFFFFFFF


def noisy_matmul(
    a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    A = a.tolist()
    B = b.tolist()
    S = [[0] * n for _ in range(m)]
    tiles_i, tiles_j = m // tile_h, n // tile_w
    msgs = [[[0] * MSG_WORDS for _ in range(tiles_j)] for _ in range(tiles_i)]
    for c in range(k // r):
        for u in range(m):
            for v in range(n):
                s = S[u][v]
                for l in range(c * r, (c + 1) * r):
                    s += A[u][l] * B[l][v]
                S[u][v] = s
        for ti in range(tiles_i):
            for tj in range(tiles_j):
                x = 0
                for u in range(ti * tile_h, (ti + 1) * tile_h):
                    for v in range(tj * tile_w, (tj + 1) * tile_w):
                        x ^= S[u][v] & 0xFFFFFFFF
                slot = c % MSG_WORDS
                msgs[ti][tj][slot] = _rotl(msgs[ti][tj][slot]) ^ x
    c_t = torch.tensor(S, dtype=torch.int64).to(torch.int32)
    m_t = torch.tensor(msgs, dtype=torch.int64)
    m_t = torch.where(m_t >= 2**31, m_t - 2**32, m_t).to(torch.int32)
    return c_t, m_t

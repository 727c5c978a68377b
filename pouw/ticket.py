"""Lottery tickets: ticket = H("ticket", job_key || u32 ti || u32 tj || 16 message words as u32 LE).

A tile wins when int(ticket, big-endian) < target * tile_work, tile_work = h * w * k multiply-adds, so a
block's expected work is 2^256 / target multiply-adds whatever the job's shape.

Imports torch only where the miner's tickets live on a device (`_candidates_device`): validation needs none.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from pouw.hashing import u32

if TYPE_CHECKING:
    import torch


TICKET_PREFIX = b"pouw/ticket\x00"


def ticket_prefix(job_key: bytes) -> bytes:
    """The constant part of every ticket's input for one job."""
    return TICKET_PREFIX + job_key


def ticket_hash(job_key: bytes, ti: int, tj: int, msg: bytes) -> bytes:
    if len(msg) != 64:
        raise ValueError("message must be 16 u32 words")
    return hashlib.sha256(ticket_prefix(job_key) + u32(ti) + u32(tj) + msg).digest()


def win_threshold(target: int, tile_work: int) -> int:
    return target * tile_work


def wins(ticket: bytes, target: int, tile_work: int) -> bool:
    return int.from_bytes(ticket, "big") < win_threshold(target, tile_work)


def block_work(target: int) -> int:
    """Expected multiply-adds per block at this target: 2^256 // target."""
    if target <= 0:
        raise ValueError("target must be positive")
    return (1 << 256) // target


def _candidates_host(flat: torch.Tensor, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, rows) of the tickets whose first 8 bytes, as a big-endian u64, are <= the threshold's."""
    arr = flat.contiguous().numpy()
    if threshold >= 1 << 256:
        idx = np.arange(arr.shape[0])
    else:
        idx = np.nonzero(arr.view(">u8")[:, 0] <= np.uint64(threshold >> 192))[0]
    return idx, arr[idx]


def _candidates_device(flat: torch.Tensor, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """The same filter on the tickets' device, on the first 7 bytes as an int64 (torch has no u64 compare);
    only the candidates are copied to the host."""
    import torch

    if threshold >= 1 << 256:
        cand = torch.arange(flat.shape[0], device=flat.device)
    else:
        weights = torch.tensor([1 << (8 * (6 - i)) for i in range(7)], dtype=torch.int64, device=flat.device)
        prefix = (flat[:, :7].to(torch.int64) * weights).sum(dim=1)           # < 2^56: no overflow
        cand = torch.nonzero(prefix <= (threshold >> 200)).flatten()
    return cand.cpu().numpy(), np.ascontiguousarray(flat[cand].cpu().numpy())


def winning_tiles(tickets: torch.Tensor, threshold: int,
                  limit: int | None = None) -> tuple[int, list[tuple[int, bytes]]]:
    """(number of tickets < threshold, [(flat tile index, ticket)] of the lowest `limit` of them (all if None),
    lowest ticket first, ties by index).

    `tickets` is (..., 32) uint8 on any device. A cheap pass keeps the tiles whose leading bytes are <= the
    threshold's (a superset of the winners: a smaller number cannot have a larger prefix): on the CPU the first
    8 bytes as one big-endian u64 (numpy), on a device the first 7 as an int64 (a few elementwise ops there);
    only those candidates come to the host, where the exact 256-bit comparison and the sort run vectorized over
    four 64-bit words.
    """
    flat = tickets.reshape(-1, 32)
    if threshold <= 0:
        return 0, []
    idx, rows = (_candidates_host if flat.device.type == "cpu" else _candidates_device)(flat, threshold)
    w = rows.view(">u8").astype(np.uint64)                 # four big-endian 64-bit words per ticket
    if threshold < 1 << 256:
        # exact 256-bit compare, vectorized: the four words, lexicographically
        t = [np.uint64((threshold >> (64 * (3 - j))) & (2**64 - 1)) for j in range(4)]
        keep = w[:, 3] < t[3]
        for j in (2, 1, 0):
            keep = (w[:, j] < t[j]) | ((w[:, j] == t[j]) & keep)
        rows, idx, w = rows[keep], idx[keep], w[keep]
    order = np.lexsort((idx, w[:, 3], w[:, 2], w[:, 1], w[:, 0]))[:limit]   # by ticket, ties by tile index
    return len(idx), list(zip(idx[order].tolist(), (row.tobytes() for row in rows[order])))

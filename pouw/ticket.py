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
        shifts = torch.arange(48, -1, -8, dtype=torch.int64, device=flat.device)  # made there: no upload
        prefix = (flat[:, :7].to(torch.int64) << shifts).sum(dim=1)  # < 2^56: no overflow
        cand = torch.nonzero(prefix <= (threshold >> 200)).flatten()
    return cand.cpu().numpy(), np.ascontiguousarray(flat[cand].cpu().numpy())


_NOT_A_WINNER = 1 << 62  # a key above every 7-byte prefix (< 2^56)


def _winners_device(flat: torch.Tensor, threshold: int, limit: int) -> tuple[int, list[tuple[int, bytes]]] | None:
    """`winning_tiles(flat, threshold, limit)` for tickets on a device, with a single copy to the host, of a size
    fixed by `limit` (no `nonzero`, whose data-dependent size is a host round trip of its own, and no copy of all
    candidates): the exact 256-bit compare runs on the device byte by byte (first differing byte), the `limit`
    winners with the smallest 7-byte prefixes are picked by `topk`, and the winner count comes with them; the host
    orders those few exactly (ticket, then index). Runs on any device, the CPU included (the tests' reference).

    Exact unless a winner left out has the same 7-byte prefix as the largest one taken while all `limit` taken
    are winners (a 2^-56 coincidence per pair of tickets); the device also counts the winners with that prefix,
    and on a mismatch this returns None and the caller takes the candidate path."""
    import numpy as np
    import torch

    from kernels.base import upload

    n, dev = flat.shape[0], flat.device
    if threshold >= 1 << 256:
        win = torch.ones(n, dtype=torch.bool, device=dev)
    else:
        thr = upload(torch.frombuffer(bytearray(threshold.to_bytes(32, "big")), dtype=torch.uint8), dev)
        diff = flat != thr
        first = diff.to(torch.int32).argmax(dim=1)  # the first differing byte (0 where all are equal)
        win = diff.any(dim=1) & (flat.gather(1, first[:, None]).squeeze(1) < thr[first])
    shifts = torch.arange(48, -1, -8, dtype=torch.int64, device=dev)
    prefix = (flat[:, :7].to(torch.int64) << shifts).sum(dim=1)  # big-endian first 7 bytes, < 2^56
    key = torch.where(win, prefix, torch.full_like(prefix, _NOT_A_WINNER))
    take = min(limit, n)
    count = win.sum().view(1)
    if take == 0:
        return int(count.cpu()[0]), []
    vals, idx = torch.topk(key, take, largest=False, sorted=True)
    tied = ((key == vals[-1]) & win).sum().view(1)  # winners sharing the largest prefix taken
    host = torch.cat([count, tied, idx, flat[idx].to(torch.int64).flatten()]).cpu().numpy()  # the one copy
    n_win, n_tied = int(host[0]), int(host[1])
    idx_h = host[2 : 2 + take]
    rows = host[2 + take :].astype(np.uint8).reshape(take, 32)
    got = [(int(i), row.tobytes()) for i, row in zip(idx_h, rows) if int.from_bytes(row.tobytes(), "big") < threshold]
    if len(got) == take:  # all taken are winners: was the cut unambiguous?
        last = rows[-1, :7].tobytes()
        if sum(row[:7].tobytes() == last for row in rows) != n_tied:
            return None
    return n_win, sorted(got, key=lambda p: (p[1], p[0]))


def winning_tiles(
    tickets: torch.Tensor, threshold: int, limit: int | None = None, one_copy: bool = False
) -> tuple[int, list[tuple[int, bytes]]]:
    """(number of tickets < threshold, [(flat tile index, ticket)] of the lowest `limit` of them (all if None),
    lowest ticket first, ties by index).

    `tickets` is (..., 32) uint8 on any device. With one_copy and a `limit` (the pipelined miner, opt-in until a
    device has confirmed it), `_winners_device` answers with one fixed-size copy to the host. Otherwise a cheap pass keeps the tiles whose leading bytes are <= the
    threshold's (a superset of the winners: a smaller number cannot have a larger prefix): on the CPU the first
    8 bytes as one big-endian u64 (numpy), on a device the first 7 as an int64 (a few elementwise ops there);
    only those candidates come to the host, where the exact 256-bit comparison and the sort run vectorized over
    four 64-bit words.
    """
    flat = tickets.reshape(-1, 32)
    if threshold <= 0:
        return 0, []
    if one_copy and limit is not None:
        best = _winners_device(flat, threshold, limit)
        if best is not None:
            return best
    idx, rows = (_candidates_host if flat.device.type == "cpu" else _candidates_device)(flat, threshold)
    w = rows.view(">u8").astype(np.uint64)  # four big-endian 64-bit words per ticket
    if threshold < 1 << 256:
        # exact 256-bit compare, vectorized: the four words, lexicographically
        t = [np.uint64((threshold >> (64 * (3 - j))) & (2**64 - 1)) for j in range(4)]
        keep = w[:, 3] < t[3]
        for j in (2, 1, 0):
            keep = (w[:, j] < t[j]) | ((w[:, j] == t[j]) & keep)
        rows, idx, w = rows[keep], idx[keep], w[keep]
    order = np.lexsort((idx, w[:, 3], w[:, 2], w[:, 1], w[:, 0]))[:limit]  # by ticket, ties by tile index
    return len(idx), list(zip(idx[order].tolist(), (row.tobytes() for row in rows[order])))

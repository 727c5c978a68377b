"""Lottery tickets: ticket = H("ticket", job_key || u32 ti || u32 tj || 16 message words as u32 LE).

A tile wins when int(ticket, big-endian) < target * tile_work, tile_work = h * w * k multiply-adds, so a
block's expected work is 2^256 / target multiply-adds whatever the job's shape.
"""
from __future__ import annotations

import hashlib

import numpy as np

from pouw.hashing import u32


def ticket_hash(job_key: bytes, ti: int, tj: int, msg: bytes) -> bytes:
    if len(msg) != 64:
        raise ValueError("message must be 16 u32 words")
    h = hashlib.sha256(b"pouw/ticket\x00" + job_key)
    h.update(u32(ti) + u32(tj) + msg)
    return h.digest()


def message_bytes(words: np.ndarray) -> bytes:
    """16 words (any integer dtype holding uint32 bit patterns) -> 64 bytes little-endian."""
    return np.ascontiguousarray(words).view(np.uint32).astype("<u4").tobytes()


def all_tickets(job_key: bytes, msgs: np.ndarray) -> np.ndarray:
    """Tickets of every tile: msgs (ti, tj, 16) uint32 bit patterns -> (ti, tj, 32) uint8."""
    ti_n, tj_n, _ = msgs.shape
    raw = np.ascontiguousarray(msgs).view(np.uint32).astype("<u4").tobytes()
    base = hashlib.sha256(b"pouw/ticket\x00" + job_key)
    out = bytearray(32 * ti_n * tj_n)
    pos = 0
    for ti in range(ti_n):
        pre = u32(ti)
        for tj in range(tj_n):
            h = base.copy()
            h.update(pre + u32(tj) + raw[pos * 2:pos * 2 + 64])
            out[pos:pos + 32] = h.digest()
            pos += 32
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(ti_n, tj_n, 32)


def win_threshold(target: int, tile_work: int) -> int:
    return target * tile_work


def wins(ticket: bytes, target: int, tile_work: int) -> bool:
    return int.from_bytes(ticket, "big") < win_threshold(target, tile_work)


def block_work(target: int) -> int:
    """Expected multiply-adds per block at this target: 2^256 // target."""
    if target <= 0:
        raise ValueError("target must be positive")
    return (1 << 256) // target

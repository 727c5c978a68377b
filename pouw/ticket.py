"""Lottery tickets: ticket = H("ticket", job_key || u32 ti || u32 tj || 16 message words as u32 LE).

A tile wins when int(ticket, big-endian) < target * tile_work, tile_work = h * w * k multiply-adds, so a
block's expected work is 2^256 / target multiply-adds whatever the job's shape.
"""
from __future__ import annotations

import hashlib

from pouw.hashing import u32


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

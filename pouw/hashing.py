"""Domain-separated hashing. Every use of SHA-256 / SHAKE-256 in the protocol goes through a tag here."""

from __future__ import annotations

import hashlib

HASH_LEN = 32


def tagged_hash(tag: bytes, *parts: bytes) -> bytes:
    """SHA-256(b"pouw/" + tag + 0x00 + parts...). Tags never contain 0x00, so uses never collide."""
    h = hashlib.sha256(b"pouw/" + tag + b"\x00")
    for p in parts:
        h.update(p)
    return h.digest()


def xof(tag: bytes, *parts: bytes, length: int) -> bytes:
    """SHAKE-256 output of `length` bytes over the tagged input (counter-free expandable output)."""
    h = hashlib.shake_256(b"pouw/" + tag + b"\x00")
    for p in parts:
        h.update(p)
    return h.digest(length)


def u32(x: int) -> bytes:
    return x.to_bytes(4, "little")


def u64(x: int) -> bytes:
    return x.to_bytes(8, "little")

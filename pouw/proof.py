"""The block proof: one winning tile, the h rows of A and w columns of B it touches, and their openings.

Binary layout (all integers little-endian), version 1:
  u8 version | job_key[32] | u32 ti | u32 tj | u16 h | u16 w | u32 k | ticket[32]
  | a_rows[h*k] (int8, row-major) | b_cols[w*k] (int8, column v's k entries contiguous)
  | u8 len_a | len_a * 32 path A | u8 len_b | len_b * 32 path B
Decoding is strict: exact length, known version, bounded sizes; anything else is `bad-pow-encoding`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pouw.errors import PowError
from pouw.params import MAX_K

VERSION = 1
_HEAD = struct.Struct("<B32sIIHHI32s")
MAX_TILE = 64
MAX_PATH = 32


@dataclass(frozen=True)
class TileProof:
    job_key: bytes
    ti: int
    tj: int
    h: int
    w: int
    k: int
    ticket: bytes
    a_rows: bytes
    b_cols: bytes
    path_a: tuple[bytes, ...]
    path_b: tuple[bytes, ...]

    def encode(self) -> bytes:
        if len(self.a_rows) != self.h * self.k or len(self.b_cols) != self.w * self.k:
            raise ValueError("opened rows/columns do not match h, w, k")
        parts = [
            _HEAD.pack(VERSION, self.job_key, self.ti, self.tj, self.h, self.w, self.k, self.ticket),
            self.a_rows,
            self.b_cols,
            bytes([len(self.path_a)]),
            *self.path_a,
            bytes([len(self.path_b)]),
            *self.path_b,
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> "TileProof":
        if not isinstance(data, (bytes, bytearray)):
            raise PowError("bad-pow-encoding", "proof must be bytes")
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise PowError("bad-pow-encoding", "truncated header")
        ver, jk, ti, tj, h, w, k, ticket = _HEAD.unpack_from(data, 0)
        if ver != VERSION:
            raise PowError("bad-pow-encoding", f"unknown proof version {ver}")
        if not (1 <= h <= MAX_TILE and 1 <= w <= MAX_TILE and 1 <= k <= MAX_K):
            raise PowError("bad-pow-encoding", "tile or k out of bounds")
        pos = _HEAD.size
        end = pos + h * k + w * k
        if len(data) < end + 1:
            raise PowError("bad-pow-encoding", "truncated operands")
        a_rows = data[pos : pos + h * k]
        b_cols = data[pos + h * k : end]
        pos = end
        paths: list[tuple[bytes, ...]] = []
        for _ in range(2):
            if pos >= len(data):
                raise PowError("bad-pow-encoding", "truncated path")
            n = data[pos]
            pos += 1
            if n > MAX_PATH or pos + 32 * n > len(data):
                raise PowError("bad-pow-encoding", "truncated or oversized path")
            paths.append(tuple(data[pos + 32 * i : pos + 32 * (i + 1)] for i in range(n)))
            pos += 32 * n
        if pos != len(data):
            raise PowError("bad-pow-encoding", "trailing bytes")
        return cls(jk, ti, tj, h, w, k, ticket, a_rows, b_cols, paths[0], paths[1])

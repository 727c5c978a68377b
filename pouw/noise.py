"""Seeds and rank-r noise (protocol version 2), each row of E and each column of F regenerable on its own.

Imports numpy and `cryptography` only (no torch): the verifier regenerates a tile's noise rows and columns with
it. The miner's whole-job noise as torch tensors is `pouw.noise_torch`.

    seed_B = H("seed-b", job_key || H_B);  seed_A = H("seed-a", seed_B || H_A)   (commit order: B, then A)

Noise map of a seed (docs/protocol.md §3): w[l] = u32 LE words of XOF("noise-perm", seed, 4k); in chunk c
(columns c·r .. c·r + r - 1) the map is the permutation pi_c of [0, r) that sorts the pairs (w[c·r + i], i)
ascending: map(c·r + j) = pi_c(j) = the i of the j-th smallest pair. Every chunk's map is a permutation, so the
chunk's r x r block of the map matrix P has rank r whatever the operands are.

Dense factors come from a seekable counter-mode stream, ChaCha20 (RFC 7539 block function, 32-bit block counter
from 0) keyed with the seed, so a single row or column is regenerable on its own:
E_L[u][j] = (ChaCha20(key=seed_A, nonce=b"pouw-E_L" + 4 zero bytes)[u*r + j] & 63) - 32   in [-32, 31]
F_R[j][v] = (ChaCha20(key=seed_B, nonce=b"pouw-F_R" + 4 zero bytes)[v*r + j] & 63) - 32   in [-32, 31]
E[u][l] = E_L[u][map_A(l)]          (E = E_L · P,  P[j][l] = [map_A(l) == j])      in [-32, 31]
F[l][v] = F_R[map_B(l)][v]          (F = Q · F_R,  Q[l][j] = [map_B(l) == j])      in [-32, 31]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pouw.hashing import tagged_hash, xof
from pouw.job import JobCommitment

MAP_TAG = b"noise-perm"


@dataclass(frozen=True)
class Seeds:
    job_key: bytes
    seed_a: bytes
    seed_b: bytes


def job_key(template: bytes) -> bytes:
    return tagged_hash(b"job-key", template)


def derive_seeds(template: bytes, job: JobCommitment) -> Seeds:
    jk = job_key(template)
    sb = tagged_hash(b"seed-b", jk, job.h_b)
    sa = tagged_hash(b"seed-a", sb, job.h_a)
    return Seeds(jk, sa, sb)


def noise_map(seed: bytes, k: int, r: int) -> np.ndarray:
    """map: int64 array of length k, values in [0, r); every chunk map[c·r : (c+1)·r] is a permutation of [0, r).

    pi_c sorts the chunk's u32 words ascending, ties by position (a stable argsort), so any implementation that
    sorts the pairs (word, position) gets the same permutation."""
    if r < 1 or k % r:
        raise ValueError(f"k={k} must be a positive multiple of r={r}")
    words = np.frombuffer(xof(MAP_TAG, seed, length=4 * k), dtype="<u4").reshape(k // r, r)
    return np.argsort(words, axis=1, kind="stable").reshape(k).astype(np.int64)


NONCE_E = b"pouw-E_L\x00\x00\x00\x00"
NONCE_F = b"pouw-F_R\x00\x00\x00\x00"


def keystream(key: bytes, nonce: bytes, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of the ChaCha20 keystream (counter starts at block 0)."""
    block, skip = divmod(offset, 64)
    if block + (skip + length + 63) // 64 > 1 << 32:
        raise ValueError("keystream range exceeds the 32-bit block counter")
    enc = Cipher(algorithms.ChaCha20(key, block.to_bytes(4, "little") + nonce), mode=None).encryptor()
    return enc.update(bytes(skip + length))[skip:]


def _small(raw: bytes) -> np.ndarray:
    """Keystream bytes -> int8 entries in [-32, 31]."""
    return (np.frombuffer(raw, dtype=np.uint8) & 63).view(np.int8) - np.int8(32)


def _factor(key: bytes, nonce: bytes, idx: Iterable[int], r: int) -> np.ndarray:
    if isinstance(idx, range) and idx.step == 1:
        first, count = idx.start, len(idx)
        contiguous = True
    else:
        idx = list(idx)
        first, count = (idx[0] if idx else 0), len(idx)
        contiguous = bool(idx) and idx == list(range(first, first + count))
    if contiguous and count:
        buf = keystream(key, nonce, first * r, count * r)  # one call for a run of rows
    else:
        buf = b"".join(keystream(key, nonce, i * r, r) for i in idx)
    return _small(buf).reshape(count, r)


def left_factor_rows(seed_a: bytes, rows: Iterable[int], r: int) -> np.ndarray:
    """E_L rows (len(rows) x r, int8 in [-32, 31])."""
    return _factor(seed_a, NONCE_E, rows, r)


def right_factor_cols(seed_b: bytes, cols: Iterable[int], r: int) -> np.ndarray:
    """F_R columns, returned as (len(cols) x r) int8: row i holds column cols[i] of F_R."""
    return _factor(seed_b, NONCE_F, cols, r)


def expand(factor: np.ndarray, mp: np.ndarray) -> np.ndarray:
    """factor (t x r) -> (t x k) int8 with entry [i][l] = factor[i][map(l)]: one gather per entry."""
    return np.take(factor, mp, axis=1)


def noise_rows(seeds: Seeds, rows: Iterable[int], k: int, r: int) -> np.ndarray:
    """Rows of E (len(rows) x k, int8)."""
    return expand(left_factor_rows(seeds.seed_a, rows, r), noise_map(seeds.seed_a, k, r))


def noise_cols(seeds: Seeds, cols: Iterable[int], k: int, r: int) -> np.ndarray:
    """Columns of F, as (len(cols) x k) int8: row i is column cols[i] of F."""
    return expand(right_factor_cols(seeds.seed_b, cols, r), noise_map(seeds.seed_b, k, r))

"""Seeds and rank-r noise, each row of E and each column of F regenerable on its own.

seed_B = H("seed-b", job_key || H_B);  seed_A = H("seed-a", seed_B || H_A)   (commit order: B, then A)
Sparse map from a seed: for each l in [0, k): u16 pair (x, y) from SHAKE-256("noise-map", seed), p(l) = x mod r,
q(l) = (p(l) + 1 + y mod (r-1)) mod r, so p != q.
Dense factors come from a seekable counter-mode stream, ChaCha20 (RFC 7539 block function, 32-bit block counter
from 0) keyed with the seed, so a single row or column is regenerable on its own:
E_L[u][j] = (ChaCha20(key=seed_A, nonce=b"pouw-E_L" + 4 zero bytes)[u*r + j] & 63) - 32   in [-32, 31]
F_R[j][v] = (ChaCha20(key=seed_B, nonce=b"pouw-F_R" + 4 zero bytes)[v*r + j] & 63) - 32   in [-32, 31]
E[u][l] = E_L[u][p(l)] - E_L[u][q(l)] in [-63, 63]               (E = E_L · P)
F[l][v] = F_R[p'(l)][v] - F_R[q'(l)][v]                          (F = Q · F_R)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pouw.hashing import tagged_hash, xof
from pouw.job import JobCommitment


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


def sparse_map(seed: bytes, k: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(p, q): int64 arrays of length k, p != q, both in [0, r)."""
    raw = np.frombuffer(xof(b"noise-map", seed, length=4 * k), dtype="<u2").reshape(k, 2).astype(np.int64)
    p = raw[:, 0] % r
    q = (p + 1 + raw[:, 1] % (r - 1)) % r
    return p, q


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
        buf = keystream(key, nonce, first * r, count * r)       # one call for a run of rows
    else:
        buf = b"".join(keystream(key, nonce, i * r, r) for i in idx)
    return _small(buf).reshape(count, r)


def left_factor_rows(seed_a: bytes, rows: Iterable[int], r: int) -> np.ndarray:
    """E_L rows (len(rows) x r, int8 in [-32, 31])."""
    return _factor(seed_a, NONCE_E, rows, r)


def right_factor_cols(seed_b: bytes, cols: Iterable[int], r: int) -> np.ndarray:
    """F_R columns, returned as (len(cols) x r) int8: row i holds column cols[i] of F_R."""
    return _factor(seed_b, NONCE_F, cols, r)


def expand(factor: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """factor (t x r) -> (t x k) int8 with entry [i][l] = factor[i][p(l)] - factor[i][q(l)].

    For a few rows (a verifier's tile) every difference factor[i][x] - factor[i][y] is tabulated first (t x r^2
    int8, at most 1 MiB), so each entry is one gather instead of two gathers and a subtraction."""
    t, r = factor.shape
    if t * r * r <= 1 << 20:
        table = (factor[:, :, None] - factor[:, None, :]).astype(np.int8).reshape(t, r * r)
        return np.take(table, p * r + q, axis=1)
    return (factor[:, p] - factor[:, q]).astype(np.int8)


def noise_rows(seeds: Seeds, rows: Iterable[int], k: int, r: int) -> np.ndarray:
    """Rows of E (len(rows) x k, int8)."""
    p, q = sparse_map(seeds.seed_a, k, r)
    return expand(left_factor_rows(seeds.seed_a, rows, r), p, q)


def noise_cols(seeds: Seeds, cols: Iterable[int], k: int, r: int) -> np.ndarray:
    """Columns of F, as (len(cols) x k) int8: row i is column cols[i] of F."""
    p, q = sparse_map(seeds.seed_b, k, r)
    return expand(right_factor_cols(seeds.seed_b, cols, r), p, q)


def map_matrix(p: np.ndarray | torch.Tensor, q: np.ndarray | torch.Tensor, r: int) -> torch.Tensor:
    """The sparse map as a dense r x k int8 matrix, entry [j][l] = [p(l) == j] - [q(l) == j] (+1 at (p(l), l),
    -1 at (q(l), l); the protocol's maps have p != q), built where p and q live (numpy arrays: the CPU; index
    tensors: their device)."""
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    k = p.shape[0]
    mat = torch.zeros((r, k), dtype=torch.int8, device=p.device)
    cols = torch.arange(k, device=p.device)
    mat[p, cols] = 1
    mat.index_put_((q, cols), torch.full((k,), -1, dtype=torch.int8, device=p.device), accumulate=True)
    return mat


@dataclass
class Noise:
    """All noise of one job, as factors and maps: E = E_L · P (m x k), F = Q · F_R (k x n).

    The dense map matrices P and Q are built on first use, on the factors' device: a backend with its own noise
    and recovery kernels (native CPU) never needs them."""

    e_l: torch.Tensor   # m x r int8, entries in [-32, 31]
    f_r: torch.Tensor   # r x n int8, entries in [-32, 31]
    maps: tuple  # (p_A, q_A, p_B, q_B) int64 indices: numpy arrays, or tensors on the device (full_noise_on)

    @cached_property
    def p_mat(self) -> torch.Tensor:
        """r x k int8: P, +1 at (p_A(l), l), -1 at (q_A(l), l)."""
        return map_matrix(self.maps[0], self.maps[1], self.e_l.shape[1]).to(self.e_l.device)

    @cached_property
    def q_mat(self) -> torch.Tensor:
        """k x r int8: Q, the map of seed_B transposed; a column-major view (the B-operand layout _int_mm and
        cuBLASLt run fastest on)."""
        return map_matrix(self.maps[2], self.maps[3], self.e_l.shape[1]).to(self.e_l.device).t()

    def to(self, device: torch.device) -> "Noise":
        return Noise(self.e_l.to(device), self.f_r.to(device), self.maps)


# (key, nonce, first_row, rows, r) -> rows x r int8 factor rows on a device, equal to `_factor` (e.g. the Triton
# ChaCha20 kernel of kernels.triton_chacha, which a backend offers as `noise_factor`).
FactorFn = Callable[[bytes, bytes, int, int, int], torch.Tensor]


def full_noise(seeds: Seeds, m: int, k: int, n: int, r: int) -> Noise:
    p_a, q_a = sparse_map(seeds.seed_a, k, r)
    p_b, q_b = sparse_map(seeds.seed_b, k, r)
    e_l = torch.from_numpy(left_factor_rows(seeds.seed_a, range(m), r))
    f_r = torch.from_numpy(right_factor_cols(seeds.seed_b, range(n), r).T.copy())
    return Noise(e_l, f_r, (p_a, q_a, p_b, q_b))


def full_noise_on(seeds: Seeds, m: int, k: int, n: int, r: int, device: torch.device, factor: FactorFn) -> Noise:
    """`full_noise` built on `device`: the factors from `factor`, the maps uploaded once (one 4 x k copy; the map
    matrices, when used, are scattered there). `maps` holds the index tensors on the device. Same values as
    full_noise."""
    p_a, q_a = sparse_map(seeds.seed_a, k, r)
    p_b, q_b = sparse_map(seeds.seed_b, k, r)
    idx = torch.from_numpy(np.stack([p_a, q_a, p_b, q_b])).to(device)
    e_l = factor(seeds.seed_a, NONCE_E, 0, m, r)
    f_r = factor(seeds.seed_b, NONCE_F, 0, n, r).t().contiguous()
    return Noise(e_l, f_r, (idx[0], idx[1], idx[2], idx[3]))


MatMul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def noisy_operands(a: torch.Tensor, b: torch.Tensor, nz: Noise, mm: MatMul) -> tuple[torch.Tensor, torch.Tensor]:
    """A' = A + E_L·P and B' = B + Q·F_R (int8; entries stay within [-127, 127]), on the operands' device.

    The sparse products run as exact int8 GEMMs of inner width r (`mm`: int8 x int8 -> int32 on the same
    device): on a CPU an order of magnitude faster than gathering columns; exact since |E|, |F| <= 63.
    """
    a2 = mm(nz.e_l, nz.p_mat).add_(a).to(torch.int8)
    b2 = mm(nz.q_mat, nz.f_r).add_(b).to(torch.int8)
    return a2, b2

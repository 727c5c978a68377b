"""Freivalds check of a claimed product, and the single-entry fraud proof.

Check: x = random vector mod p = 2^61 - 1 derived from H("freivalds", H_C || H_A || H_B || round) (or supplied
by the checker); accept iff A(Bx) == Cx (mod p). Exact: |C| < 2^31 < p/2, so C mod p determines C. One round
errs with probability <= 1/p.

Matrix-vector products mod p are computed exactly in int64: x is split into 16-bit limbs, so every partial
sum is below 2^31 * 2^16 * 2^16 = 2^63.

Matrices may be numpy arrays or CPU torch tensors (read through numpy); this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pouw.commit import TAG_A, TAG_B, TAG_C, tree_a, tree_b, tree_c
from pouw.errors import PowError
from pouw.hashing import u64, xof
from pouw.job import JobCommitment
from pouw.merkle import verify_range
from pouw.params import MAX_DIM, OPERAND_MAX

P61 = (1 << 61) - 1
_LIMB = 16


def challenge_vector(h_c: bytes, job: JobCommitment, length: int, round_: int = 0) -> list[int]:
    raw = np.frombuffer(xof(b"freivalds", h_c, job.h_a, job.h_b, u64(round_), length=8 * length), dtype="<u8")
    return [int(v) % P61 for v in raw]


def _matvec_mod_int64(m: np.ndarray, x: list[int]) -> list[int]:
    """(m @ x) mod p with 16-bit limbs in int64: exact for |entries| < 2^31 and at most 2^16 columns."""
    m64 = m.astype(np.int64, copy=False)
    acc = [0] * m.shape[0]
    for i in range(4):  # 4 limbs of 16 bits cover 61 bits
        limb = np.array([(v >> (_LIMB * i)) & 0xFFFF for v in x], dtype=np.int64)
        part = m64 @ limb
        scale = 1 << (_LIMB * i)
        acc = [(s + int(pv) * scale) % P61 for s, pv in zip(acc, part)]
    return acc


def _float_limb_bits(maxabs: int, cols: int) -> int | None:
    """The widest limb w with maxabs · cols · 2^w <= 2^53, so that every partial sum of a row times a vector
    of w-bit limbs is an integer below 2^53 in magnitude (exact in float64, in any summation order);
    None when that leaves limbs narrower than 8 bits (then the int64 path is used)."""
    w = 53 - (max(1, maxabs) * cols).bit_length()
    return w if w >= 8 else None


def matvec_mod_many(mat: Any, xs: list[list[int]]) -> list[list[int]]:
    """[(mat @ x) mod p for x in xs] exactly, for integer `mat` with |entries| < 2^31 and at most 2^16
    columns. The vectors' limbs go through one float64 (BLAS) product when the entries' magnitude allows
    exact float64 sums (e.g. int8 operands and int32 results of the allowed shapes), else through int64."""
    m = np.asarray(mat)
    rows, cols = m.shape
    if any(len(x) != cols for x in xs) or cols > MAX_DIM:
        raise ValueError("matrix and vector do not fit")
    if not xs:
        return []
    maxabs = max(abs(int(m.min())), abs(int(m.max()))) if m.size else 0
    w = _float_limb_bits(maxabs, cols)
    if w is None:
        return [_matvec_mod_int64(m, x) for x in xs]
    nl = -(-61 // w)
    mask = np.uint64((1 << w) - 1)
    limbs = np.empty((cols, nl * len(xs)), dtype=np.float64)
    for v, x in enumerate(xs):
        xa = np.array(x, dtype=np.uint64)
        for i in range(nl):
            limbs[:, v * nl + i] = (xa >> np.uint64(w * i)) & mask
    part = (m.astype(np.float64) @ limbs).astype(np.int64)  # exact integers below 2^53
    out = []
    for v in range(len(xs)):
        acc = [0] * rows
        for i in range(nl):
            scale = 1 << (w * i)
            acc = [(s + pv * scale) % P61 for s, pv in zip(acc, part[:, v * nl + i].tolist())]
        out.append(acc)
    return out


def matvec_mod(mat: Any, x: list[int]) -> list[int]:
    """(mat @ x) mod p exactly, for integer `mat` with |entries| < 2^31 and at most 2^16 columns."""
    return matvec_mod_many(mat, [x])[0]


def freivalds_check(a: Any, b: Any, c: Any, x: list[int]) -> list[int]:
    """Rows i where (Cx)_i != (A(Bx))_i mod p; empty means the check passed for this x."""
    bx = matvec_mod(b, x)
    abx = matvec_mod(a, bx)
    cx = matvec_mod(c, x)
    return [i for i, (u, v) in enumerate(zip(abx, cx)) if u != v]


def freivalds(a: Any, b: Any, c: Any, job: JobCommitment, h_c: bytes, rounds: int = 1) -> list[int]:
    """Freivalds with challenge vectors derived from H_C and the job; returns the rows that disagree.
    All rounds share one pass over each matrix (matvec_mod_many)."""
    xs = [challenge_vector(h_c, job, b.shape[1], rnd) for rnd in range(rounds)]
    abx = matvec_mod_many(a, matvec_mod_many(b, xs))
    cx = matvec_mod_many(c, xs)
    return sorted({i for u_, v_ in zip(abx, cx) for i, (u, v) in enumerate(zip(u_, v_)) if u != v})


@dataclass(frozen=True)
class FraudProof:
    """Claim: C[i][j] != A[i] · B[:, j]. Row A_i, column B_j and row C_i, each with its Merkle opening."""

    i: int
    j: int
    a_row: bytes  # k int8
    b_col: bytes  # k int8
    c_row: bytes  # n int32 little-endian
    path_a: tuple[bytes, ...]
    path_b: tuple[bytes, ...]
    path_c: tuple[bytes, ...]

    def to_list(self) -> list[Any]:
        return [
            self.i,
            self.j,
            self.a_row,
            self.b_col,
            self.c_row,
            list(self.path_a),
            list(self.path_b),
            list(self.path_c),
        ]

    @classmethod
    def from_list(cls, items: list[Any]) -> "FraudProof":
        try:
            i, j, a_row, b_col, c_row, pa, pb, pc = items
            if not all(type(v) is int for v in (i, j)):
                raise TypeError
            if not all(isinstance(v, bytes) for v in (a_row, b_col, c_row, *pa, *pb, *pc)):
                raise TypeError
            return cls(i, j, a_row, b_col, c_row, tuple(pa), tuple(pb), tuple(pc))
        except (TypeError, ValueError):
            raise PowError("bad-fraud-encoding", "malformed fraud proof") from None


def find_wrong_entry(a: Any, b: Any, c: Any, rows: list[int]) -> tuple[int, int] | None:
    """First (i, j) among `rows` where C[i][j] != (A·B)[i][j], computing one row of A·B per candidate."""
    a, c = np.asarray(a), np.asarray(c)
    b64 = np.asarray(b).astype(np.int64) if rows else None
    for i in rows:
        diff = np.nonzero(a[i].astype(np.int64) @ b64 != c[i].astype(np.int64))[0]
        if diff.size:
            return i, int(diff[0])
    return None


def build_fraud_proof(a: Any, b: Any, c: Any, i: int, j: int) -> FraudProof:
    ta, tb, tc = tree_a(a), tree_b(b), tree_c(c)
    a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
    return FraudProof(
        i,
        j,
        a[i].tobytes(),
        np.ascontiguousarray(b[:, j]).tobytes(),
        c[i].astype("<i4").tobytes(),
        tuple(ta.open_range(i, 1)),
        tuple(tb.open_range(j, 1)),
        tuple(tc.open_range(i, 1)),
    )


def verify_fraud_proof(job: JobCommitment, h_c: bytes, proof: FraudProof) -> None:
    """Accept (return None) iff the openings are valid and C[i][j] != A_i · B_j. Otherwise raise PowError:
    bad-fraud-index, bad-fraud-merkle-a/-b/-c, bad-fraud-range, or fraud-not-proven (the entry is right)."""
    k, n = job.k, job.n
    if not (0 <= proof.i < job.m and 0 <= proof.j < n):
        raise PowError("bad-fraud-index", "entry outside the result")
    if len(proof.a_row) != k or len(proof.b_col) != k or len(proof.c_row) != 4 * n:
        raise PowError("bad-fraud-encoding", "row or column of the wrong length")
    verify_range(TAG_A, job.h_a, job.m, k, proof.i, [proof.a_row], proof.path_a, "bad-fraud-merkle-a")
    verify_range(TAG_B, job.h_b, n, k, proof.j, [proof.b_col], proof.path_b, "bad-fraud-merkle-b")
    verify_range(TAG_C, h_c, job.m, 4 * n, proof.i, [proof.c_row], proof.path_c, "bad-fraud-merkle-c")
    a = np.frombuffer(proof.a_row, dtype=np.int8).astype(np.int64)
    b = np.frombuffer(proof.b_col, dtype=np.int8).astype(np.int64)
    if np.abs(a).max() > OPERAND_MAX or np.abs(b).max() > OPERAND_MAX:
        raise PowError("bad-fraud-range", "committed operand outside the allowed range")
    claimed = int(np.frombuffer(proof.c_row, dtype="<i4")[proof.j])
    if int(a @ b) == claimed:
        raise PowError("fraud-not-proven", "the disputed entry is correct")

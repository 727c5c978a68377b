"""Merkle commitments to the rows of A, the columns of B and the rows of C.

Matrices may be numpy arrays or CPU torch tensors (read through numpy); this module does not import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pouw.job import JobCommitment, check_operands
from pouw.merkle import MerkleTree

TAG_A = b"A-rows"
TAG_B = b"B-cols"
TAG_C = b"C-rows"


def row_leaves(x: Any) -> list[bytes]:
    """One leaf per row: the row's raw little-endian bytes (int8 or int32)."""
    raw = np.asarray(x)
    raw = np.ascontiguousarray(raw, dtype=raw.dtype.newbyteorder("<"))
    return [raw[i].tobytes() for i in range(raw.shape[0])]


def tree_a(a: Any) -> MerkleTree:
    return MerkleTree(TAG_A, row_leaves(a))


def tree_b(b: Any) -> MerkleTree:
    # a torch tensor is transposed by torch (about 4x faster than numpy's copy of a transposed view at 2048^2)
    cols = b.t().contiguous() if callable(getattr(b, "t", None)) else np.asarray(b).T
    return MerkleTree(TAG_B, row_leaves(cols))


def tree_c(c: Any) -> MerkleTree:
    c = np.asarray(c)
    if c.dtype != np.int32:
        raise ValueError("C must be int32")
    return MerkleTree(TAG_C, row_leaves(c))


def commit_job(a: Any, b: Any) -> JobCommitment:
    """Commit to client operands (checked: int8, 2-D, contiguous, in [-64, 64], inner dims agree)."""
    ta, tb = check_operands(a, b)
    return JobCommitment(tree_a(ta).root, tree_b(tb).root, ta.shape[0], ta.shape[1], tb.shape[1])


def commit_result(c: Any) -> bytes:
    """H_C: commitment over the rows of the exact int32 result."""
    return tree_c(c).root


def open_result_rows(c: Any, rows: list[int]) -> list[tuple[int, bytes, tuple[bytes, ...]]]:
    """Rows of C with their openings against H_C: [(i, row i as n int32 LE bytes, path)], in `rows` order
    (what an answer to a data-availability challenge carries, docs/jobs.md)."""
    t = tree_c(c)
    leaves = row_leaves(c)
    return [(i, leaves[i], tuple(t.open_range(i, 1))) for i in rows]

"""Merkle commitments to the rows of A, the columns of B and the rows of C."""
from __future__ import annotations

import torch

from pouw.job import JobCommitment, check_operands
from pouw.merkle import MerkleTree

TAG_A = b"A-rows"
TAG_B = b"B-cols"
TAG_C = b"C-rows"


def row_leaves(x: torch.Tensor) -> list[bytes]:
    """One leaf per row: the row's raw little-endian bytes (int8 or int32)."""
    raw = x.contiguous().numpy()
    if raw.dtype.byteorder == ">":
        raw = raw.byteswap().view(raw.dtype.newbyteorder("<"))
    return [raw[i].tobytes() for i in range(raw.shape[0])]


def tree_a(a: torch.Tensor) -> MerkleTree:
    return MerkleTree(TAG_A, row_leaves(a))


def tree_b(b: torch.Tensor) -> MerkleTree:
    return MerkleTree(TAG_B, row_leaves(b.t().contiguous()))


def tree_c(c: torch.Tensor) -> MerkleTree:
    if c.dtype != torch.int32:
        raise ValueError("C must be int32")
    return MerkleTree(TAG_C, row_leaves(c))


def commit_job(a: torch.Tensor, b: torch.Tensor) -> JobCommitment:
    """Commit to client operands (checked: int8, 2-D, contiguous, in [-64, 64], inner dims agree)."""
    ta, tb = check_operands(a, b)
    return JobCommitment(tree_a(ta).root, tree_b(tb).root, ta.shape[0], ta.shape[1], tb.shape[1])


def commit_result(c: torch.Tensor) -> bytes:
    """H_C: commitment over the rows of the exact int32 result."""
    return tree_c(c).root

"""Binary Merkle trees over fixed-size leaves, with aligned-subtree openings.

leaf  = SHA-256(0x00 || leaf bytes)
node  = SHA-256(0x01 || left || right)
The leaf level is padded with 32 zero bytes to a power of two. The commitment binds the use, the leaf count
and the leaf size:  root = tagged_hash("commit/" + tag, u64 count, u64 leaf_len, tree_root).

An opening of 2^j consecutive leaves starting at a multiple of 2^j is the list of sibling hashes from that
subtree's root up to the tree root: ceil(log2(count)) - j hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pouw.errors import PowError
from pouw.hashing import tagged_hash, u64

ZERO = b"\x00" * 32


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def depth_for(count: int) -> int:
    return max(0, (count - 1).bit_length())


def build_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels, level 0 = leaf hashes padded to a power of two, last level = [tree root]."""
    hashes = [leaf_hash(x) for x in leaves]
    size = 1 << depth_for(len(hashes))
    hashes += [ZERO] * (size - len(hashes))
    levels = [hashes]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev), 2)])
    return levels


def commitment(tag: bytes, count: int, leaf_len: int, tree_root: bytes) -> bytes:
    return tagged_hash(b"commit/" + tag, u64(count), u64(leaf_len), tree_root)


class MerkleTree:
    """A Merkle tree over `leaves` (all of length leaf_len) with its domain-bound commitment `root`."""

    def __init__(self, tag: bytes, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("empty tree")
        self.tag = tag
        self.count = len(leaves)
        self.leaf_len = len(leaves[0])
        self.levels = build_levels(leaves)
        self.root = commitment(tag, self.count, self.leaf_len, self.levels[-1][0])

    def open_range(self, start: int, size: int) -> list[bytes]:
        """Opening of leaves [start, start+size); size a power of two, start a multiple of size."""
        if size & (size - 1) or start % size or start + size > self.count:
            raise ValueError("range must be an aligned power-of-two block inside the tree")
        j = size.bit_length() - 1
        idx = start >> j
        path = []
        for level in self.levels[j:-1]:
            path.append(level[idx ^ 1])
            idx >>= 1
        return path


def subtree_root(leaves: Sequence[bytes]) -> bytes:
    """Root of a complete subtree over 2^j leaves (no padding)."""
    level = [leaf_hash(x) for x in leaves]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def verify_range(
    tag: bytes,
    root: bytes,
    count: int,
    leaf_len: int,
    start: int,
    leaves: Sequence[bytes],
    path: Sequence[bytes],
    reason: str,
) -> None:
    """Check that `leaves` sit at [start, start+len) of the committed tree; raise PowError(reason) if not."""
    size = len(leaves)
    if size == 0 or size & (size - 1) or start % size or start + size > count:
        raise PowError(reason, "opening is not an aligned power-of-two block")
    if any(len(x) != leaf_len for x in leaves):
        raise PowError(reason, "leaf of the wrong length")
    j = size.bit_length() - 1
    if len(path) != depth_for(count) - j:
        raise PowError(reason, "path of the wrong length")
    h = subtree_root(leaves)
    idx = start >> j
    for sib in path:
        h = node_hash(sib, h) if idx & 1 else node_hash(h, sib)
        idx >>= 1
    if commitment(tag, count, leaf_len, h) != root:
        raise PowError(reason, "root mismatch")

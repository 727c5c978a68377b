"""The chain's hashes: the protocol's one tagged-hash convention (pouw/hashing.py) and the transaction root.

    H(tag, x...)      = SHA-256("pouw/" ‖ tag ‖ 0x00 ‖ x...)
    XOF(tag, x..., L) = SHAKE-256("pouw/" ‖ tag ‖ 0x00 ‖ x...)[0:L]

Tags are ASCII without 0x00, so no two uses collide. Integers hashed as raw bytes are fixed-width
little-endian (``u32``, ``u64``); structures are hashed as their canonical encoding (chain/encoding.py).
Every tag the chain uses is in ``CHAIN_TAGS`` (docs/chain.md lists them with their inputs).
"""

from __future__ import annotations

from pouw.hashing import HASH_LEN, tagged_hash, u32, u64, xof

__all__ = ["HASH_LEN", "ZERO_HASH", "CHAIN_TAGS", "tagged_hash", "xof", "u32", "u64", "merkle_root"]

ZERO_HASH = b"\x00" * HASH_LEN

TXROOT = b"txroot"
CHAIN_TAGS = (
    b"block",
    b"tx-sig",
    b"addr",
    b"state",
    b"acct",
    b"job",
    b"econ",
    b"filler",
    b"p2p-auth",
    b"challenge",
    TXROOT + b"/leaf",
    TXROOT + b"/node",
    TXROOT + b"/root",
    TXROOT + b"/empty",
)


def merkle_root(leaves: list[bytes], tag: bytes = TXROOT) -> bytes:
    """Merkle root over leaf bytes: leaf = H(tag/leaf, x), node = H(tag/node, left ‖ right), an odd node at
    the end of a level is promoted unchanged (no duplication, so no CVE-2012-2459-style mutation), and
    root = H(tag/root, u64 count ‖ top); no leaves: H(tag/empty) (no input after the tag)."""
    level = [tagged_hash(tag + b"/leaf", x) for x in leaves]
    if not level:
        return tagged_hash(tag + b"/empty")
    while len(level) > 1:
        nxt = [tagged_hash(tag + b"/node", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return tagged_hash(tag + b"/root", u64(len(leaves)), level[0])

"""Domain-separated SHA-256 and the transaction Merkle root used by the chain."""
from __future__ import annotations

import hashlib

HASH_LEN = 32
ZERO_HASH = b"\x00" * HASH_LEN


def tagged_hash(tag: bytes, *parts: bytes) -> bytes:
    """sha256(len(tag) ‖ tag ‖ parts...): distinct tags never collide with each other."""
    h = hashlib.sha256(bytes([len(tag)]) + tag)
    for p in parts:
        h.update(p)
    return h.digest()


def merkle_root(leaves: list[bytes], tag: bytes = b"pouw/txroot") -> bytes:
    """Merkle root over leaf bytes; leaves and inner nodes are domain separated, an odd node is
    promoted unchanged (no duplication, so no CVE-2012-2459-style mutation), and the leaf count is
    committed in the final hash."""
    level = [tagged_hash(tag + b"/leaf", x) for x in leaves]
    if not level:
        return tagged_hash(tag + b"/empty")
    while len(level) > 1:
        nxt = [tagged_hash(tag + b"/node", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return tagged_hash(tag + b"/root", len(leaves).to_bytes(8, "big"), level[0])

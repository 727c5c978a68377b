#!/usr/bin/env python3
"""Verify one block of a pouw node by hand, from the documented encodings only (docs/chain.md, docs/protocol.md).

    python docs/examples/verify_block.py --node http://127.0.0.1:8545 [BLOCK]    (BLOCK: height, hash or tip)

Fetches `GET /api/v1/blocks/{BLOCK}?format=raw` and `GET /api/v1/network` (for the network's [pow] parameters),
then checks: the encoding is canonical, the block hash, the transaction root, and the header's useful-work proof
(template, ticket below the work-scaled target, operand range, Merkle openings of A's rows and B's columns, and
the replayed transcript giving the claimed ticket). Prints one JSON line; exit status 0 when every check passes,
1 with the first failing check's reject reason, 2 when the block cannot be fetched.

It imports nothing from the node: only the standard library, msgpack, numpy and cryptography.
It does not check what needs the parent chain (difficulty, timestamps, state root): `pouw verify` does that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import tomllib
import urllib.error
import urllib.request

import msgpack
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


class Reject(Exception):
    """A failed check; args[0] is the reason string the node uses (docs/chain.md, docs/protocol.md §6)."""


# --- hashing (docs/chain.md "Hashes", docs/protocol.md §2) -------------------------------------------------------
def H(tag: str, *parts: bytes) -> bytes:
    return hashlib.sha256(b"pouw/" + tag.encode() + b"\x00" + b"".join(parts)).digest()


def XOF(tag: str, data: bytes, length: int) -> bytes:
    return hashlib.shake_256(b"pouw/" + tag.encode() + b"\x00" + data).digest(length)


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def u64(x: int) -> bytes:
    return struct.pack("<Q", x)


def encode(obj) -> bytes:
    """The canonical encoding: msgpack of ints, byte strings and arrays, shortest forms (docs/chain.md)."""
    return msgpack.packb(obj, use_bin_type=True)


# --- transaction root (docs/chain.md "Transaction root") ---------------------------------------------------------
def tx_root(txs: list) -> bytes:
    if not txs:
        return H("txroot/empty")
    level = [H("txroot/leaf", encode(tx)) for tx in txs]
    while len(level) > 1:
        nxt = [H("txroot/node", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])  # an odd last node is carried up unchanged
        level = nxt
    return H("txroot/root", u64(len(txs)), level[0])


# --- Merkle openings (docs/protocol.md §2) ------------------------------------------------------------------------
def merkle_open(
    tag: str,
    commitment: bytes,
    count: int,
    leaf_len: int,
    start: int,
    leaves: list[bytes],
    path: list[bytes],
    reason: str,
) -> None:
    depth = (count - 1).bit_length()  # D = ceil(log2(count)), 0 for one leaf
    j = (len(leaves) - 1).bit_length()
    if len(path) != depth - j:
        raise Reject(reason)
    level = [hashlib.sha256(b"\x00" + x).digest() for x in leaves]
    while len(level) > 1:
        level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    x, i = level[0], start >> j
    for sib in path:
        x = hashlib.sha256(b"\x01" + (sib + x if i & 1 else x + sib)).digest()
        i >>= 1
    if H("commit/" + tag, u64(count), u64(leaf_len), x) != commitment:
        raise Reject(reason)


# --- noise (docs/protocol.md §3) -----------------------------------------------------------------------------------
def noise_map(seed: bytes, k: int, r: int) -> np.ndarray:
    w = np.frombuffer(XOF("noise-perm", seed, 4 * k), dtype="<u4")
    mp = np.empty(k, dtype=np.int64)
    for c in range(k // r):
        chunk = w[c * r : (c + 1) * r]
        mp[c * r : (c + 1) * r] = sorted(range(r), key=lambda i: (int(chunk[i]), i))
    return mp


def keystream(seed: bytes, label: bytes, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of ChaCha20(key=seed, nonce=label ‖ 0^4), block counter from 0."""
    block, skip = divmod(offset, 64)
    enc = Cipher(algorithms.ChaCha20(seed, u32(block) + label + b"\x00" * 4), mode=None).encryptor()
    return enc.update(b"\x00" * (skip + length))[skip:]


def small(raw: bytes) -> np.ndarray:
    return (np.frombuffer(raw, dtype=np.uint8) & 63).astype(np.int16) - 32


# --- the header proof (docs/protocol.md §4, §6) --------------------------------------------------------------------
PROOF_HEAD = struct.Struct("<B32sIIHHI32s")


def check_proof(header: list, rank: int, tile_h: int, tile_w: int) -> dict:
    template = encode(header[:11])
    h_a, h_b, m, k, n = header[9]
    target = int.from_bytes(header[5], "big")
    proof = header[11]
    # decode: exact length, known version
    if len(proof) < PROOF_HEAD.size:
        raise Reject("bad-pow-encoding")
    ver, job_key, ti, tj, h, w, pk, ticket = PROOF_HEAD.unpack_from(proof, 0)
    off = PROOF_HEAD.size
    a_rows, off = proof[off : off + h * pk], off + h * pk
    b_cols, off = proof[off : off + w * pk], off + w * pk
    paths = []
    for _ in range(2):
        if off >= len(proof):
            raise Reject("bad-pow-encoding")
        cnt = proof[off]
        paths.append([proof[off + 1 + 32 * i : off + 33 + 32 * i] for i in range(cnt)])
        off += 1 + 32 * cnt
    if ver != 1 or off != len(proof) or len(a_rows) != h * pk or len(b_cols) != w * pk:
        raise Reject("bad-pow-encoding")
    # shape minable (docs/protocol.md §1), proof's h, w, k match
    if not (
        k % rank == 0
        and 16 * rank <= k <= 1 << 16
        and 0 < m <= 1 << 16
        and 0 < n <= 1 << 16
        and m % tile_h == 0
        and n % tile_w == 0
    ) or (h, w, pk) != (tile_h, tile_w, k):
        raise Reject("bad-pow-shape")
    if not (0 <= ti < m // h and 0 <= tj < n // w):
        raise Reject("bad-pow-tile")
    if target <= 0:
        raise Reject("bad-pow-target")
    if job_key != H("job-key", template):
        raise Reject("bad-pow-template")
    if int.from_bytes(ticket, "big") >= target * h * w * k:
        raise Reject("high-ticket")
    A = np.frombuffer(a_rows, dtype=np.int8).reshape(h, k).astype(np.int64)  # rows ti·h … of A
    B = np.frombuffer(b_cols, dtype=np.int8).reshape(w, k).astype(np.int64).T  # columns tj·w … of B (k × w)
    if A.min() < -64 or A.max() > 64 or B.min() < -64 or B.max() > 64:
        raise Reject("bad-pow-range")
    merkle_open(
        "A-rows", h_a, m, k, ti * h, [a_rows[i * k : (i + 1) * k] for i in range(h)], paths[0], "bad-pow-merkle-a"
    )
    merkle_open(
        "B-cols", h_b, n, k, tj * w, [b_cols[i * k : (i + 1) * k] for i in range(w)], paths[1], "bad-pow-merkle-b"
    )
    # the noise of the tile's rows and columns
    r = rank
    seed_b = H("seed-b", job_key, h_b)
    seed_a = H("seed-a", seed_b, h_a)
    map_a, map_b = noise_map(seed_a, k, r), noise_map(seed_b, k, r)
    E_L = np.stack([small(keystream(seed_a, b"pouw-E_L", u * r, r)) for u in range(ti * h, ti * h + h)])  # h × r
    F_R = np.stack([small(keystream(seed_b, b"pouw-F_R", v * r, r)) for v in range(tj * w, tj * w + w)]).T  # r × w
    A1 = A + E_L[:, map_a]  # A' = A + E,  E[u][l] = E_L[u][map_A(l)]
    B1 = B + F_R[map_b, :]  # B' = B + F,  F[l][v] = F_R[map_B(l)][v]
    # the transcript: fold the running sums S_c of every chunk into 16 words
    msg = [0] * 16
    S = np.zeros((h, w), dtype=np.int64)
    for c in range(k // r):
        S += A1[:, c * r : (c + 1) * r] @ B1[c * r : (c + 1) * r, :]
        x = int(np.bitwise_xor.reduce((S & 0xFFFFFFFF).ravel()))  # XOR of the tile as uint32
        word = msg[c % 16]
        msg[c % 16] = (((word << 13) | (word >> 19)) & 0xFFFFFFFF) ^ x
    replayed = H("ticket", job_key, u32(ti), u32(tj), b"".join(u32(x) for x in msg))
    if replayed != ticket:
        raise Reject("bad-pow-ticket")
    return {"job": [m, k, n], "tile": [ti, tj], "ticket": ticket.hex(), "tile_work": h * w * k}


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def verify(node: str, block_id: str) -> dict:
    doc = get_json(f"{node}/api/v1/blocks/{block_id}?format=raw")
    pow_params = tomllib.loads(get_json(f"{node}/api/v1/network")["config_toml"])["pow"]
    raw = bytes.fromhex(doc["raw"])
    block = msgpack.unpackb(raw, raw=True, strict_map_key=True)
    if encode(block) != raw or not (isinstance(block, list) and len(block) == 2 and len(block[0]) == 12):
        raise Reject("bad-blk-encoding")
    header, txs = block
    out = {"height": header[2], "hash": doc["hash"], "txs": len(txs)}
    if H("block", encode(header)).hex() != doc["hash"]:
        raise Reject("bad-block-hash")
    if tx_root(txs) != header[6]:
        raise Reject("bad-txnmrklroot")
    if header[2] == 0:  # genesis: no proof; the network is identified by its hash (docs/chain.md)
        if doc["hash"] != get_json(f"{node}/api/v1/network")["genesis"] or header[11] != b"":
            raise Reject("bad-genesis")
        return {**out, "genesis": True}
    out.update(check_proof(header, pow_params["rank"], pow_params["tile_h"], pow_params["tile_w"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("block", nargs="?", default="tip", help="height, block hash or tip (default tip)")
    ap.add_argument("--node", default="http://127.0.0.1:8545")
    args = ap.parse_args()
    try:
        out = verify(args.node.rstrip("/"), args.block)
    except Reject as e:
        print(json.dumps({"block": args.block, "valid": False, "reason": e.args[0]}))
        return 1
    except urllib.error.HTTPError as e:  # the node's error document, e.g. 404 block-not-found
        print(f"verify_block: {e.code} {e.read().decode(errors='replace')}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"verify_block: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**out, "valid": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

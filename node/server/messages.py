"""Peer-to-peer messages: msgpack maps ``{"t": type, ...fields}`` with every size and count bounded.

Each message type has a schema (field -> checker). Decoding applies msgpack's explicit limits first
(`max_bin_len`, `max_str_len`, `max_array_len`, `max_map_len`, `max_ext_len`), then the schema; anything
else raises `MessageError`, which the peer layer treats as misbehaviour.

Types (fields):

- ``hello``      v, chain_id, genesis(32), node_id(32, Ed25519 public key), nonce(32), port, height,
                 work(32, big-endian chainwork), tip(32), agent(str)
- ``auth``       sig(64) = Ed25519 over H("p2p-auth", peer's nonce ‖ own node_id ‖ genesis) (chain/hashing.py)
- ``ping``/``pong``  nonce(u64)
- ``tx``         tx(bytes)                              one transaction (gossip)
- ``block``      block(bytes)                           one block (gossip or reply to getblocks)
- ``getheaders`` locator([32..], ≤ 64), stop(32 or empty)
- ``headers``    headers([bytes], ≤ MAX_HEADERS)
- ``getblocks``  hashes([32..], ≤ MAX_GETBLOCKS)
- ``notfound``   hashes([32..], ≤ MAX_GETBLOCKS)
- ``getaddr``    (none)
- ``addr``       addrs([str "host:port"], ≤ MAX_ADDRS)
"""

from __future__ import annotations

from typing import Any, Callable

import msgpack

from chain.hashing import tagged_hash

PROTOCOL_VERSION = 1
AGENT = "pouw-node/0.1"

MAX_LOCATOR = 64
MAX_HEADERS = 100
MAX_GETBLOCKS = 32
MAX_ADDRS = 100
MAX_STR = 128
MAX_MAP = 16


class MessageError(ValueError):
    """A message that is malformed, of unknown type, or outside the limits."""


def auth_payload(peer_nonce: bytes, node_id: bytes, genesis: bytes) -> bytes:
    return tagged_hash(b"p2p-auth", peer_nonce, node_id, genesis)


# --- field checkers -----------------------------------------------------------------------------------


def _bytes(n: int | None = None, max_len: int | None = None) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if not isinstance(v, bytes):
            raise MessageError("expected bytes")
        if n is not None and len(v) != n:
            raise MessageError(f"expected {n} bytes")
        if max_len is not None and len(v) > max_len:
            raise MessageError("bytes too long")

    return check


def _uint(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
        raise MessageError("expected u64")


def _str(v: Any) -> None:
    if not isinstance(v, str) or len(v) > MAX_STR:
        raise MessageError("expected short string")


def _list(item: Callable[[Any], None], max_n: int) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if not isinstance(v, list) or len(v) > max_n:
            raise MessageError("expected bounded list")
        for x in v:
            item(x)

    return check


def _hash_or_empty(v: Any) -> None:
    if not isinstance(v, bytes) or len(v) not in (0, 32):
        raise MessageError("expected 32-byte hash or empty")


class Codec:
    """Encoder/decoder for one network's limits (block and header sizes come from the chain config)."""

    def __init__(self, max_block_bytes: int, max_header_bytes: int, max_tx_bytes: int):
        self.max_block = max_block_bytes + max_header_bytes
        self.max_header = max_header_bytes
        self.max_tx = max_tx_bytes
        # one message carries at most one block, or MAX_HEADERS headers bounded by the same byte budget
        self.max_msg = self.max_block + 64 * 1024
        h32 = _bytes(32)
        self.schemas: dict[str, dict[str, Callable[[Any], None]]] = {
            "hello": {
                "v": _uint,
                "chain_id": _uint,
                "genesis": h32,
                "node_id": h32,
                "nonce": h32,
                "port": _uint,
                "height": _uint,
                "work": _bytes(32),
                "tip": h32,
                "agent": _str,
            },
            "auth": {"sig": _bytes(64)},
            "ping": {"nonce": _uint},
            "pong": {"nonce": _uint},
            "tx": {"tx": _bytes(max_len=self.max_tx)},
            "block": {"block": _bytes(max_len=self.max_block)},
            "getheaders": {"locator": _list(h32, MAX_LOCATOR), "stop": _hash_or_empty},
            "headers": {"headers": _list(_bytes(max_len=self.max_header), MAX_HEADERS)},
            "getblocks": {"hashes": _list(h32, MAX_GETBLOCKS)},
            "notfound": {"hashes": _list(h32, MAX_GETBLOCKS)},
            "getaddr": {},
            "addr": {"addrs": _list(_str, MAX_ADDRS)},
        }

    def encode(self, t: str, **fields: Any) -> bytes:
        if t not in self.schemas:
            raise MessageError(f"unknown message type {t!r}")
        data = msgpack.packb({"t": t, **fields}, use_bin_type=True)
        if len(data) > self.max_msg:
            raise MessageError(f"{t} message of {len(data)} bytes exceeds {self.max_msg}")
        return data

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode and check one message; raises MessageError."""
        if not isinstance(data, (bytes, bytearray)):
            raise MessageError("binary frame expected")
        if len(data) > self.max_msg:
            raise MessageError("message too large")
        try:
            obj = msgpack.unpackb(
                bytes(data),
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_bin_len=self.max_block,
                max_str_len=MAX_STR,
                max_array_len=max(MAX_HEADERS, MAX_LOCATOR, MAX_ADDRS, MAX_GETBLOCKS),
                max_map_len=MAX_MAP,
                max_ext_len=0,
            )
        except Exception as e:  # msgpack raises several types on malformed input
            raise MessageError(f"undecodable message ({type(e).__name__})") from e
        if not isinstance(obj, dict):
            raise MessageError("message is not a map")
        t = obj.pop("t", None)
        schema = self.schemas.get(t) if isinstance(t, str) else None
        if schema is None:
            raise MessageError(f"unknown message type {t!r}")
        if set(obj) != set(schema):
            raise MessageError(f"{t}: fields {sorted(map(str, obj))} != {sorted(schema)}")
        for k, check in schema.items():
            try:
                check(obj[k])
            except MessageError as e:
                raise MessageError(f"{t}.{k}: {e}") from None
        return t, obj

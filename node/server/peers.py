"""Peer book (persistent addresses and bans) and per-connection peer state with misbehaviour scores.

Scoring: each offence adds points; at `BAN_SCORE` the peer is disconnected and its node id banned for
`BAN_SECONDS`, together with its address: the listen address of an outbound peer, the IP (IPv6: the /64,
`netguard.ban_key`) of an inbound one, so a fresh node key from the same address is refused too (except
for addresses the operator exempts, by default loopback: banning it would lock out every local peer). Malformed, oversized or unknown messages, invalid
blocks, headers and transactions with bad signatures score `BAN_SCORE` at once; an unconnected header
chain or unsolicited data scores less. `time-too-new`, low work, a stale nonce or a full mempool score
nothing. The book is ``<datadir>/peers.json``.

The ban list holds at most `MAX_BANS` entries (over it, the soonest-expiring go first); expired entries
are dropped; a ban only marks the book dirty, and the node writes it off the event loop (`flush`).

Inbound eviction (`select_eviction`, after Bitcoin Core's SelectNodeToEvict): when every inbound slot is
taken by an authenticated peer, a newly authenticated one may take the slot of an existing peer. Protected
are peers from distinct network groups (4, chosen by a keyed hash), the 4 that most recently relayed a
valid new block, the 4 that most recently relayed a new transaction, and the older half of the rest; of
what remains, the youngest peer of the network group with the most connections is evicted. Outbound
peers are never evicted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from node.logfmt import event

log = logging.getLogger("pouw.peers")

BAN_SCORE = 100
BAN_SECONDS = 24 * 3600
MAX_BANS = 10_000


@dataclass
class AddrInfo:
    last_ok: float = 0.0
    failures: int = 0
    next_try: float = 0.0


class PeerBook:
    """Known addresses ("host:port") and bans, saved as JSON."""

    def __init__(self, path: Path | None):
        self.path = path
        self.addrs: dict[str, AddrInfo] = {}
        self.bans: dict[str, float] = {}  # "id:<hex>", "addr:<host:port>" or "ip:<ban_key>" -> until (unix time)
        self.dirty = False
        if path is not None and path.exists():
            try:
                doc = json.loads(path.read_text())
                for a, v in doc.get("addrs", {}).items():
                    self.addrs[a] = AddrInfo(float(v.get("last_ok", 0)), int(v.get("failures", 0)))
                self.bans = {k: float(v) for k, v in doc.get("bans", {}).items()}
            except (OSError, ValueError, AttributeError) as e:
                event(log, logging.WARNING, "ignoring unreadable peer file", path=str(path), why=str(e))

    def _snapshot(self) -> dict:
        self.expire()
        self.dirty = False
        return {
            "addrs": {a: {"last_ok": i.last_ok, "failures": i.failures} for a, i in self.addrs.items()},
            "bans": dict(self.bans),
        }

    def _write(self, doc: dict) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, self.path)

    def save(self) -> None:
        """Write the book now (start-up, shutdown)."""
        if self.path is not None:
            self._write(self._snapshot())

    async def flush(self) -> None:
        """Write the book if it changed, serialising and writing in a thread (off the event loop)."""
        if self.path is not None and self.dirty:
            doc = self._snapshot()
            await asyncio.to_thread(self._write, doc)

    def expire(self) -> None:
        now = time.time()
        for k in [k for k, v in self.bans.items() if v <= now]:
            del self.bans[k]

    def add(self, addr: str) -> bool:
        if addr in self.addrs or len(self.addrs) >= 1000:
            return False
        self.addrs[addr] = AddrInfo()
        return True

    def remove(self, addr: str) -> None:
        self.addrs.pop(addr, None)

    @staticmethod
    def _keys(node_id: bytes | None, addr: str | None, ip: str | None) -> list[str]:
        from node.server.netguard import ban_key

        return (
            ([f"id:{node_id.hex()}"] if node_id else [])
            + ([f"addr:{addr}"] if addr else [])
            + ([f"ip:{ban_key(ip)}"] if ip else [])
        )

    def banned(self, node_id: bytes | None = None, addr: str | None = None, ip: str | None = None) -> bool:
        now = time.time()
        return any(self.bans.get(k, 0) > now for k in self._keys(node_id, addr, ip))

    def ban(
        self, node_id: bytes | None, addr: str | None, seconds: float = BAN_SECONDS, *, ip: str | None = None
    ) -> None:
        """Ban a node id, a listen address and/or an IP; bounded (MAX_BANS), written later by `flush`."""
        until = time.time() + seconds
        for k in self._keys(node_id, addr, ip):
            self.bans[k] = until
        if len(self.bans) > MAX_BANS:
            self.expire()
            if len(self.bans) > MAX_BANS:  # drop the soonest-expiring tenth at once (amortised)
                drop = sorted(self.bans, key=self.bans.__getitem__)[: len(self.bans) - MAX_BANS * 9 // 10]
                for k in drop:
                    del self.bans[k]
        self.dirty = True

    def unban_all(self) -> None:
        self.bans.clear()
        self.save()

    def connected_ok(self, addr: str) -> None:
        i = self.addrs.setdefault(addr, AddrInfo())
        i.last_ok, i.failures, i.next_try = time.time(), 0, 0.0

    def failed(self, addr: str) -> None:
        i = self.addrs.get(addr)
        if i is not None:
            i.failures += 1
            i.next_try = time.monotonic() + min(60.0, 1.0 * 2 ** min(i.failures, 6))


@dataclass
class Peer:
    """One authenticated (or authenticating) connection."""

    ws: Any
    inbound: bool
    remote: str  # host:port of the socket
    codec: Any
    node_id: bytes | None = None
    listen_addr: str | None = None  # host:port it accepts connections on
    remote_host: str = ""  # IP of the socket (inbound peers)
    ready: bool = False
    score: int = 0
    height: int = 0
    work: int = 0  # chainwork it claims (hello) or proved, whichever is larger
    proven_work: int = 0  # chainwork of the best header/block it actually sent us
    tip: bytes = b""
    agent: str = ""
    my_nonce: bytes = field(default_factory=lambda: os.urandom(32))
    connected_at: float = field(default_factory=time.time)
    known: set[bytes] = field(default_factory=set)  # block/tx hashes it has or we sent it
    inflight: dict[bytes, float] = field(default_factory=dict)  # block hash -> request time
    headers_req_at: float = 0.0
    stalls: int = 0
    msgs_in: int = 0
    bytes_in: int = 0
    out: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=2000))
    closed: bool = False
    tokens: float = 500.0
    tokens_at: float = field(default_factory=time.monotonic)
    last_block_at: float = 0.0  # when it last relayed a valid block new to us (eviction protection)
    last_tx_at: float = 0.0  # when it last relayed a transaction new to our mempool

    @property
    def name(self) -> str:
        nid = self.node_id.hex()[:8] if self.node_id else "?"
        return f"{nid}@{self.listen_addr or self.remote}{'(in)' if self.inbound else ''}"

    def know(self, h: bytes) -> None:
        if len(self.known) > 50_000:
            self.known.clear()
        self.known.add(h)

    def take_token(self, rate: float = 500.0, burst: float = 2000.0) -> bool:
        """Token bucket on incoming messages: False when the peer floods."""
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def send_nowait(self, data: bytes) -> bool:
        """Queue a frame; a full queue means a stalled reader: the caller disconnects it."""
        if self.closed:
            return False
        try:
            self.out.put_nowait(data)
            return True
        except asyncio.QueueFull:
            return False

    def info(self) -> dict:
        return {
            "id": self.node_id.hex() if self.node_id else None,
            "addr": self.listen_addr or self.remote,
            "inbound": self.inbound,
            "height": self.height,
            "score": self.score,
            "agent": self.agent,
            "inflight": len(self.inflight),
            "connected_s": round(time.time() - self.connected_at, 1),
        }


def select_eviction(peers: list[Peer], secret: bytes, protect: int = 4) -> Peer | None:
    """The inbound peer to evict for a new one, or None when every candidate is protected (module docstring)."""
    from node.server.netguard import netgroup

    cands = [p for p in peers if p.inbound and p.ready and not p.closed]
    group = {id(p): netgroup(p.remote_host or p.remote.rpartition(":")[0]) for p in cands}

    def drop(key, n: int, reverse: bool = True, only=lambda p: True) -> None:
        chosen = sorted((p for p in cands if only(p)), key=key, reverse=reverse)[:n]
        for p in chosen:
            cands.remove(p)

    seen: set[str] = set()
    for p in sorted(cands, key=lambda p: hashlib.sha256(secret + group[id(p)].encode()).digest()):
        if len(seen) >= protect:
            break
        if group[id(p)] not in seen:
            seen.add(group[id(p)])
            cands.remove(p)
    drop(lambda p: p.last_block_at, protect, only=lambda p: p.last_block_at > 0)
    drop(lambda p: p.last_tx_at, protect, only=lambda p: p.last_tx_at > 0)
    drop(lambda p: -p.connected_at, len(cands) // 2)
    if not cands:
        return None
    groups: dict[str, list[Peer]] = {}
    for p in cands:
        groups.setdefault(group[id(p)], []).append(p)
    biggest = max(groups.values(), key=lambda g: (len(g), max(p.connected_at for p in g)))
    return max(biggest, key=lambda p: p.connected_at)

"""Peer book (persistent addresses and bans) and per-connection peer state with misbehaviour scores.

Scoring: each offence adds points; at `BAN_SCORE` the peer is disconnected and its node id (and, for
outbound peers, its address) banned for `BAN_SECONDS`. Malformed, oversized or unknown messages, invalid
blocks, headers and transactions with bad signatures score `BAN_SCORE` at once; an unconnected header
chain or unsolicited data scores less. `time-too-new`, low work, a stale nonce or a full mempool score
nothing. The book is ``<datadir>/peers.json``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("pouw.peers")

BAN_SCORE = 100
BAN_SECONDS = 24 * 3600


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
        self.bans: dict[str, float] = {}  # "id:<hex>" or "addr:<host:port>" -> until (unix time)
        if path is not None and path.exists():
            try:
                doc = json.loads(path.read_text())
                for a, v in doc.get("addrs", {}).items():
                    self.addrs[a] = AddrInfo(float(v.get("last_ok", 0)), int(v.get("failures", 0)))
                self.bans = {k: float(v) for k, v in doc.get("bans", {}).items()}
            except (OSError, ValueError, AttributeError) as e:
                log.warning("ignoring unreadable peer file %s (%s)", path, e)

    def save(self) -> None:
        if self.path is None:
            return
        doc = {"addrs": {a: {"last_ok": i.last_ok, "failures": i.failures} for a, i in self.addrs.items()},
               "bans": {k: v for k, v in self.bans.items() if v > time.time()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.path)

    def add(self, addr: str) -> bool:
        if addr in self.addrs or len(self.addrs) >= 1000:
            return False
        self.addrs[addr] = AddrInfo()
        return True

    def remove(self, addr: str) -> None:
        self.addrs.pop(addr, None)

    def banned(self, node_id: bytes | None = None, addr: str | None = None) -> bool:
        now = time.time()
        keys = ([f"id:{node_id.hex()}"] if node_id else []) + ([f"addr:{addr}"] if addr else [])
        return any(self.bans.get(k, 0) > now for k in keys)

    def ban(self, node_id: bytes | None, addr: str | None, seconds: float = BAN_SECONDS) -> None:
        until = time.time() + seconds
        if node_id:
            self.bans[f"id:{node_id.hex()}"] = until
        if addr:
            self.bans[f"addr:{addr}"] = until
        self.save()

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
    remote: str                      # host:port of the socket
    codec: Any
    node_id: bytes | None = None
    listen_addr: str | None = None   # host:port it accepts connections on
    remote_host: str = ""            # IP of the socket (inbound peers)
    ready: bool = False
    score: int = 0
    height: int = 0
    work: int = 0                    # chainwork it claims (hello) or proved, whichever is larger
    proven_work: int = 0             # chainwork of the best header/block it actually sent us
    tip: bytes = b""
    agent: str = ""
    my_nonce: bytes = field(default_factory=lambda: os.urandom(32))
    connected_at: float = field(default_factory=time.time)
    known: set[bytes] = field(default_factory=set)       # block/tx hashes it has or we sent it
    inflight: dict[bytes, float] = field(default_factory=dict)  # block hash -> request time
    headers_req_at: float = 0.0
    stalls: int = 0
    msgs_in: int = 0
    bytes_in: int = 0
    out: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=2000))
    closed: bool = False
    tokens: float = 500.0
    tokens_at: float = field(default_factory=time.monotonic)

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
        return {"id": self.node_id.hex() if self.node_id else None, "addr": self.listen_addr or self.remote,
                "inbound": self.inbound, "height": self.height, "score": self.score, "agent": self.agent,
                "inflight": len(self.inflight), "connected_s": round(time.time() - self.connected_at, 1)}

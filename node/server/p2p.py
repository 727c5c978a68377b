"""Peer connections over websockets (aiohttp): handshake, framing, limits, scoring, reconnection.

Handshake: both sides send ``hello`` (protocol version, chain id, genesis hash, node id = Ed25519 public
key, a fresh 32-byte nonce, listen port, best height/work). Each side answers with ``auth``: its
signature over H("p2p-auth", the other side's nonce ‖ own node id ‖ genesis). A connection is
*ready* only after a valid auth arrives; before that any other message closes it. Mismatched version,
chain or genesis, a self-connection, a banned node id or a duplicate connection close it too.

Slots: `max_inbound` counts only authenticated (ready) inbound peers. Connections still in the
handshake are bounded separately (`max_pending` in all, `MAX_PENDING_PER_IP` per address) and closed at
an absolute `HANDSHAKE_TIMEOUT` (pings do not extend it). A peer that authenticates when the inbound slots
are full evicts one per `peers.select_eviction`, or is closed if all are protected; at most
`max_inbound_per_ip` ready inbound peers share one IP (operator-trusted `noban` addresses, loopback by
default, are exempt from the per-IP limits). Banned node ids and banned addresses (the IP of an
inbound peer, see node.server.peers) are refused before the websocket upgrade where the address is known.

Limits: websocket frames above `Codec.max_msg` are refused by aiohttp (`max_msg_size`) and the peer is
banned; every message is decoded with explicit msgpack limits (node.server.messages); incoming messages pass a
token bucket (500/s, burst 2000); the send queue is bounded (a peer that does not read is dropped). Each
connection has its own reader task, so a flooding peer costs only its own messages' decode time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import WSMsgType, web

from chain.keys import verify_sig
from node.logfmt import event
from node.server.messages import AGENT, MAX_ADDRS, PROTOCOL_VERSION, MessageError, auth_payload
from node.server.peers import BAN_SCORE, Peer, PeerBook, select_eviction

if TYPE_CHECKING:
    from node.server.interfaces import PeerHost

log = logging.getLogger("pouw.p2p")

HANDSHAKE_TIMEOUT = 10.0
PING_INTERVAL = 30.0
MAX_PENDING_PER_IP = 2

Handler = Callable[..., "Awaitable[None] | None"]
"""A ready peer's message handler: called as ``handler(peer, **fields)`` with the decoded, schema-checked
fields (node.server.messages); may be a coroutine function."""


def _valid_addr(a: str) -> bool:
    host, _, port = a.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536 and len(a) <= 100


class P2P:
    def __init__(
        self,
        node: PeerHost,
        book: PeerBook,
        *,
        max_outbound: int = 8,
        max_inbound: int = 32,
        max_inbound_per_ip: int = 8,
        max_pending: int = 16,
        noban: tuple[str, ...] = ("127.0.0.1", "::1"),
    ):
        self.node = node
        self.book = book
        self.codec = node.codec
        self.max_outbound = max_outbound
        self.max_inbound = max_inbound
        self.max_inbound_per_ip = max_inbound_per_ip
        self.max_pending = max_pending
        self.noban = set(noban)
        self.evict_secret = os.urandom(32)
        self.evicted_count = 0
        self.peers: list[Peer] = []
        self.connecting: set[str] = set()
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False
        self.banned_count = 0
        # message type -> handler, for ready peers. The connection's own messages are handled here; the
        # chain's (blocks, transactions, headers) are registered by their owners (Node.__init__). A type
        # without a handler is misbehaviour; tests/test_node_units.py checks the table covers node.server.messages.
        self.handlers: dict[str, Handler] = {
            "ping": self._on_ping,
            "pong": self._on_pong,
            "getaddr": self._on_getaddr,
            "addr": self._on_addr,
            "hello": functools.partial(self._on_repeat_handshake, "hello"),
            "auth": functools.partial(self._on_repeat_handshake, "auth"),
        }

    def register(self, handlers: Mapping[str, Handler]) -> None:
        """Add message handlers; each type has exactly one (a second registration is a programming error)."""
        for t, h in handlers.items():
            if t in self.handlers:
                raise ValueError(f"a handler for peer message {t!r} is already registered")
            self.handlers[t] = h

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5))
        self._spawn(self._connector())

    async def stop(self) -> None:
        self.stopping = True
        for p in list(self.peers):
            await self.close(p, "shutdown")
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        self.book.save()

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    @property
    def ready_peers(self) -> list[Peer]:
        return [p for p in self.peers if p.ready and not p.closed]

    def add_addr(self, addr: str) -> None:
        if _valid_addr(addr) and addr != self.node.listen_addr:
            self.book.add(addr)

    def forget_all(self) -> None:
        """Forget every known address (tests: partition the network). Connections are not closed."""
        self.book.addrs.clear()

    async def disconnect_all(self) -> None:
        for p in list(self.peers):
            await self.close(p, "disconnect requested")

    # --- outbound --------------------------------------------------------------------------------------
    async def _connector(self) -> None:
        """Keep up to max_outbound connections to known addresses; reconnect with back-off."""
        while not self.stopping:
            try:
                out = [p for p in self.peers if not p.inbound]
                connected = {p.listen_addr for p in self.peers if p.listen_addr}
                now = time.monotonic()
                cands = [
                    a
                    for a, i in self.book.addrs.items()
                    if a not in connected
                    and a not in self.connecting
                    and i.next_try <= now
                    and not self.book.banned(addr=a)
                ]
                random.shuffle(cands)
                for a in cands[: max(0, self.max_outbound - len(out) - len(self.connecting))]:
                    self.connecting.add(a)
                    self._spawn(self.connect(a))
            except Exception:
                log.exception("connector error")
            await asyncio.sleep(1.0)

    async def connect(self, addr: str) -> None:
        assert self.session is not None
        try:
            ws = await self.session.ws_connect(
                f"ws://{addr}/p2p",
                max_msg_size=self.codec.max_msg,
                heartbeat=PING_INTERVAL,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            self.book.failed(addr)
            event(log, logging.DEBUG, "connect failed", addr=str(addr), why=str(e))
            self.connecting.discard(addr)
            return
        peer = Peer(ws, False, addr, self.codec, listen_addr=addr)
        self.connecting.discard(addr)
        await self._serve(peer)

    # --- inbound ---------------------------------------------------------------------------------------
    def _ip_bannable(self, host: str) -> bool:
        return bool(host) and host not in self.noban

    async def handle_inbound(self, request: web.Request) -> web.StreamResponse:
        host = str(request.remote or "")
        if self.stopping:
            raise web.HTTPServiceUnavailable(text="shutting down")
        if self._ip_bannable(host) and self.book.banned(ip=host):
            raise web.HTTPForbidden(text="banned")
        pending = [p for p in self.peers if p.inbound and not p.ready]
        if len(pending) >= self.max_pending or (
            host not in self.noban and sum(p.remote_host == host for p in pending) >= MAX_PENDING_PER_IP
        ):
            raise web.HTTPServiceUnavailable(text="too many handshakes in progress")
        ws = web.WebSocketResponse(max_msg_size=self.codec.max_msg, heartbeat=PING_INTERVAL, autoping=True)
        await ws.prepare(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = Peer(ws, True, f"{host}:{peername[1]}" if peername else host, self.codec, remote_host=host)
        await self._serve(peer)
        return ws

    # --- one connection ---------------------------------------------------------------------------------
    async def _serve(self, peer: Peer) -> None:
        self.peers.append(peer)
        writer = asyncio.ensure_future(self._writer(peer))
        try:
            self.send(
                peer,
                "hello",
                v=PROTOCOL_VERSION,
                chain_id=self.node.cfg.chain_id,
                genesis=self.node.chain.genesis.hash,
                node_id=self.node.node_key.pubkey,
                nonce=peer.my_nonce,
                port=self.node.port,
                height=self.node.chain.height,
                work=self.node.chain.tip.chainwork.to_bytes(32, "big"),
                tip=self.node.chain.tip.hash,
                agent=AGENT,
            )
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            while not peer.closed:
                try:
                    if peer.ready:
                        msg = await peer.ws.receive()
                    else:  # an absolute deadline: control frames (pings) received meanwhile do not extend it
                        msg = await asyncio.wait_for(peer.ws.receive(), max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    await self.close(peer, "handshake timeout")
                    break
                if msg.type == WSMsgType.BINARY:
                    peer.msgs_in += 1
                    peer.bytes_in += len(msg.data)
                    await self._on_frame(peer, msg.data)
                    await asyncio.sleep(0)  # let other peers and the API run between messages
                elif msg.type == WSMsgType.ERROR:
                    exc = peer.ws.exception()
                    code = getattr(exc, "code", None)
                    if code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                        self.misbehave(peer, BAN_SCORE, "oversized message")
                    else:
                        self.misbehave(peer, BAN_SCORE, f"protocol error ({exc})")
                    break
                elif msg.type == WSMsgType.TEXT:
                    self.misbehave(peer, BAN_SCORE, "text frame")
                    break
                else:  # CLOSE / CLOSING / CLOSED
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            event(log, logging.ERROR, "peer handler error", exc_info=True, peer=peer.name)
        finally:
            writer.cancel()
            await self.close(peer, "connection ended")

    async def _writer(self, peer: Peer) -> None:
        try:
            while True:
                data = await peer.out.get()
                await peer.ws.send_bytes(data)
        except (asyncio.CancelledError, ConnectionError, RuntimeError):
            pass
        except Exception as e:
            event(log, logging.DEBUG, "peer send failed", peer=peer.name, why=str(e))

    async def close(self, peer: Peer, why: str) -> None:
        if peer in self.peers:
            self.peers.remove(peer)
            was_ready = peer.ready
            peer.closed = True
            peer.ready = False
            if was_ready:
                event(log, logging.INFO, "peer disconnected", peer=peer.name, addr=peer.remote, reason=why)
                self.node.sync.on_peer_gone(peer)
            if not peer.inbound and peer.listen_addr and (not was_ready or time.time() - peer.connected_at < 10):
                self.book.failed(peer.listen_addr)  # back off from peers that refuse or drop us quickly
        peer.closed = True
        try:
            await asyncio.wait_for(peer.ws.close(), 2.0)
        except Exception:
            pass

    def send(self, peer: Peer, t: str, **fields: Any) -> None:
        try:
            data = self.codec.encode(t, **fields)
        except MessageError:
            event(log, logging.ERROR, "cannot encode message", exc_info=True, type=str(t))
            return
        if not peer.send_nowait(data):
            if not peer.closed:
                event(log, logging.WARNING, "peer send queue full; disconnecting", peer=peer.name)
                self._spawn(self.close(peer, "send queue full"))

    def broadcast(self, t: str, known: bytes | None = None, exclude: Peer | None = None, **fields: Any) -> int:
        """Send to every ready peer (skipping ones that already know `known`). Returns peers reached."""
        data = self.codec.encode(t, **fields)
        n = 0
        for p in self.ready_peers:
            if p is exclude or (known is not None and known in p.known):
                continue
            if known is not None:
                p.know(known)
            if p.send_nowait(data):
                n += 1
        return n

    def drop(self, peer: Peer, why: str) -> None:
        """Close the connection soon, from synchronous code (not a ban)."""
        if not peer.closed:
            self._spawn(self.close(peer, why))

    def misbehave(self, peer: Peer, points: int, why: str) -> None:
        """Add misbehaviour points; at BAN_SCORE disconnect and ban (node id, and address when outbound)."""
        peer.score += points
        self.node.metrics.misbehaviour.inc()
        if peer.score >= BAN_SCORE:
            if not peer.closed:
                event(
                    log, logging.WARNING, "peer banned", peer=peer.name, addr=peer.remote, score=peer.score, reason=why
                )
                self.banned_count += 1
                self.node.metrics.peer_bans.inc()
                ip = peer.remote_host if peer.inbound and self._ip_bannable(peer.remote_host) else None
                self.book.ban(peer.node_id, None if peer.inbound else peer.listen_addr, ip=ip)
                self._spawn(self.close(peer, f"banned: {why}"))
                peer.closed = True
        else:
            event(log, logging.INFO, "peer misbehaved", peer=peer.name, points=points, score=peer.score, reason=why)

    # --- messages --------------------------------------------------------------------------------------
    async def _on_frame(self, peer: Peer, data: bytes) -> None:
        try:
            t, m = self.codec.decode(data)
        except MessageError as e:
            self.misbehave(peer, BAN_SCORE, f"malformed message: {e}")
            return
        solicited = (t in ("block", "notfound") and peer.inflight) or (t == "headers" and peer.headers_req_at)
        if not solicited and not peer.take_token():
            self.misbehave(peer, 10, "message flood")
            return
        if not peer.ready:
            await self._handshake(peer, t, m)
            return
        handler = self.handlers.get(t)
        if handler is None:
            self.misbehave(peer, BAN_SCORE, f"unexpected message {t}")
            return
        res = handler(peer, **m)
        if asyncio.iscoroutine(res):
            await res

    def _on_ping(self, peer: Peer, nonce: int) -> None:
        self.send(peer, "pong", nonce=nonce)

    def _on_pong(self, peer: Peer, nonce: int) -> None:
        pass

    def _on_getaddr(self, peer: Peer) -> None:
        addrs = [a for a in self.book.addrs if a != peer.listen_addr][:MAX_ADDRS]
        if self.node.listen_addr:
            addrs = [self.node.listen_addr] + addrs[: MAX_ADDRS - 1]
        self.send(peer, "addr", addrs=addrs)

    def _on_addr(self, peer: Peer, addrs: list[str]) -> None:
        for a in addrs:
            self.add_addr(a)

    def _on_repeat_handshake(self, t: str, peer: Peer, **_: Any) -> None:
        self.misbehave(peer, 20, f"duplicate {t}")

    async def _handshake(self, peer: Peer, t: str, m: dict) -> None:
        node = self.node
        if t == "hello":
            if peer.node_id is not None:
                self.misbehave(peer, BAN_SCORE, "second hello")
                return
            if (
                m["v"] != PROTOCOL_VERSION
                or m["chain_id"] != node.cfg.chain_id
                or m["genesis"] != node.chain.genesis.hash
            ):
                event(
                    log,
                    logging.INFO,
                    "peer on a wrong network",
                    peer=peer.remote,
                    version=m["v"],
                    chain=m["chain_id"],
                    genesis=m["genesis"].hex()[:16],
                )
                await self.close(peer, "wrong network")
                return
            if m["node_id"] == node.node_key.pubkey:
                if peer.listen_addr:
                    self.book.remove(peer.listen_addr)
                await self.close(peer, "self connection")
                return
            peer.node_id = m["node_id"]
            ip = peer.remote_host if peer.inbound and self._ip_bannable(peer.remote_host) else None
            if self.book.banned(node_id=peer.node_id, ip=ip):
                await self.close(peer, "banned")
                return
            peer.height, peer.work, peer.tip, peer.agent = (
                m["height"],
                int.from_bytes(m["work"], "big"),
                m["tip"],
                m["agent"],
            )
            if peer.inbound and m["port"]:
                host = peer.remote_host or peer.remote.rpartition(":")[0]
                peer.listen_addr = f"{host}:{m['port']}"
            sig = node.node_key.sign(auth_payload(m["nonce"], node.node_key.pubkey, node.chain.genesis.hash))
            self.send(peer, "auth", sig=sig)
        elif t == "auth":
            if peer.node_id is None:
                self.misbehave(peer, BAN_SCORE, "auth before hello")
                return
            if not verify_sig(
                peer.node_id, auth_payload(peer.my_nonce, peer.node_id, node.chain.genesis.hash), m["sig"]
            ):
                self.misbehave(peer, BAN_SCORE, "bad handshake signature")
                return
            await self._ready(peer)
        else:
            self.misbehave(peer, BAN_SCORE, f"{t} before handshake")

    async def _ready(self, peer: Peer) -> None:
        me = self.node.node_key.pubkey
        for other in list(self.peers):
            if other is not peer and other.ready and other.node_id == peer.node_id:
                # duplicate: keep the connection initiated by the smaller node id (both sides agree)
                initiator = lambda p: me if not p.inbound else p.node_id  # noqa: E731
                keep_other = initiator(other) == min(me, peer.node_id)  # type: ignore[type-var]
                if keep_other:
                    await self.close(peer, "duplicate connection")
                    return
                await self.close(other, "duplicate connection")
        if peer.inbound and not await self._inbound_slot(peer):
            return
        peer.ready = True
        if not peer.inbound and peer.listen_addr:
            self.book.connected_ok(peer.listen_addr)
        elif peer.listen_addr:
            self.add_addr(peer.listen_addr)
        event(
            log,
            logging.INFO,
            "peer connected",
            peer=peer.name,
            addr=peer.remote,
            direction="inbound" if peer.inbound else "outbound",
            height=peer.height,
            agent=peer.agent,
        )
        self.send(peer, "getaddr")
        self.node.sync.on_peer_ready(peer)

    async def _inbound_slot(self, peer: Peer) -> bool:
        """Room for a newly authenticated inbound peer: within the per-IP limit, a free slot or an evicted
        peer's (module docstring). False (and the peer closed) when there is none."""
        ready_in = [p for p in self.ready_peers if p.inbound]
        if (
            peer.remote_host not in self.noban
            and sum(p.remote_host == peer.remote_host for p in ready_in) >= self.max_inbound_per_ip
        ):
            await self.close(peer, "too many peers from this address")
            return False
        if len(ready_in) >= self.max_inbound:
            victim = select_eviction(ready_in, self.evict_secret)
            if victim is None:
                await self.close(peer, "inbound slots full")
                return False
            self.evicted_count += 1
            event(log, logging.INFO, "peer evicted; inbound slots full", peer=victim.name, for_peer=peer.name)
            await self.close(victim, "evicted")
        return True

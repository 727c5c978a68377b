"""Headers-first synchronisation from several peers.

1. A peer whose handshake (or later blocks) shows more chainwork than our best header is asked for
   headers (`getheaders` with a locator of our best header chain); each batch is checked (proof first)
   and stored by `ChainState.submit_header`; a full batch asks for the next one.
2. If the best header chain has more work than the active tip, its missing blocks are requested
   (`getblocks`, ≤ 16 in flight per peer, from any peer that claims enough work) in a moving window.
   A header chain with no more work than the tip is never downloaded (low-work chains are ignored).
3. Requests time out (`BLOCK_TIMEOUT`) and go to another peer; a peer that stalls three times is
   disconnected (not banned). A peer asked for headers because it claims more chainwork than our best
   header, which then answers with nothing that raises the work it proved (or does not answer within
   `HEADERS_TIMEOUT`), loses its claim and is disconnected: it is not asked again and again.
4. Progress (height, target, blocks/s, ETA) is logged every few seconds and exposed in `/api/v1/status`.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Callable

from chain.block import Header
from chain.errors import EncodingError, ValidationError
from node.logfmt import event
from node.server.messages import MAX_GETBLOCKS, MAX_HEADERS, MAX_LOCATOR
from node.server.peers import BAN_SCORE, Peer

if TYPE_CHECKING:
    from chain.chainstate import ChainState
    from node.server.interfaces import PeerNet

log = logging.getLogger("pouw.sync")

BLOCK_TIMEOUT = 10.0
HEADERS_TIMEOUT = 15.0
PER_PEER_INFLIGHT = 16
WINDOW = 512
PROGRESS_EVERY = 5.0


class Sync:
    """Implements node.server.interfaces.PeerEvents. Takes the chain, the peer layer (`PeerNet`), the largest message
    (`max_msg`, bounding a `headers` answer) and a callback counting misbehaviour; nothing else of the node."""

    def __init__(self, chain: ChainState, net: PeerNet, max_msg: int, on_misbehaviour: Callable[[], None]):
        self.chain = chain
        self.net = net
        self.max_msg = max_msg
        self.on_misbehaviour = on_misbehaviour
        self.inflight: dict[bytes, tuple[Peer, float]] = {}
        self.best_header = self._scan_best()
        self.samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self.last_progress = 0.0
        self.started_at: float | None = None
        self.start_height = self.chain.height

    # --- best header -----------------------------------------------------------------------------------
    def _scan_best(self):
        return max((e for e in self.chain.index.values() if not e.failed), key=lambda e: (e.chainwork, -e.seq))

    def note_entry(self, e) -> None:
        if not e.failed and e.chainwork > self.best_header.chainwork:
            self.best_header = e

    @property
    def syncing(self) -> bool:
        """Behind a better header chain that some connected peer can serve (the miner waits meanwhile;
        headers nobody serves do not stop mining)."""
        best = self.best_header
        if best.failed or best.chainwork <= self.chain.tip.chainwork:
            return False
        return any(p.proven_work >= best.chainwork for p in self.net.ready_peers)

    # --- requests --------------------------------------------------------------------------------------
    def locator(self) -> list[bytes]:
        """Hashes of the best header chain: the last 10, then exponentially sparser, then genesis."""
        e = self.best_header if not self.best_header.failed else self.chain.tip
        out: list[bytes] = []
        step = 1
        while len(out) < MAX_LOCATOR - 1:
            out.append(e.hash)
            if e.height == 0:
                return out
            if len(out) >= 10:
                step *= 2
            target = max(0, e.height - step)
            while e.height > target:
                e = self.chain.index[e.prev]
        if out[-1] != self.chain.genesis.hash:
            out.append(self.chain.genesis.hash)
        return out

    def request_headers(self, peer: Peer) -> None:
        if peer.closed or time.monotonic() - peer.headers_req_at < HEADERS_TIMEOUT:
            return
        peer.headers_req_at = time.monotonic()
        self.net.send(peer, "getheaders", locator=self.locator(), stop=b"")

    def on_peer_ready(self, peer: Peer) -> None:
        if peer.work > self.best_header.chainwork:
            self.request_headers(peer)

    def on_peer_gone(self, peer: Peer) -> None:
        for h in list(peer.inflight):
            self.inflight.pop(h, None)
        peer.inflight.clear()
        self.schedule()

    def peer_claims(self, peer: Peer, work: int, height: int, tip: bytes) -> None:
        """The peer sent a valid header/block with this chainwork."""
        peer.proven_work = max(peer.proven_work, work)
        if work > peer.work:
            peer.work, peer.height, peer.tip = work, height, tip

    def claim_failed(self, peer: Peer, why: str) -> None:
        """The peer does not serve the chainwork it claimed: drop the claim and disconnect it."""
        event(
            log,
            logging.INFO,
            "sync peer dropped",
            peer=peer.name,
            why=why,
            claimed_work=peer.work,
            proven_work=peer.proven_work,
        )
        peer.work = peer.proven_work
        self.on_misbehaviour()
        if not peer.closed:
            self.net.drop(peer, "claimed chain not delivered")

    # --- serving ---------------------------------------------------------------------------------------
    def on_getheaders(self, peer: Peer, locator: list[bytes], stop: bytes) -> None:
        start = 0
        for h in locator:
            if self.chain.is_active(h):
                start = self.chain.index[h].height + 1
                break
        out, size = [], 0
        budget = self.max_msg - 4096
        for height in range(start, min(start + MAX_HEADERS, self.chain.height + 1)):
            at = self.chain.block_hash_at(height)
            enc = self.chain.get_header(at).encoded  # type: ignore[arg-type,union-attr]
            if size + len(enc) + 8 > budget:
                break
            out.append(enc)
            size += len(enc) + 8
            if at == stop:
                break
        self.net.send(peer, "headers", headers=out)

    def on_getblocks(self, peer: Peer, hashes: list[bytes]) -> None:
        missing = []
        for h in hashes:
            blk = self.chain.get_block(h)
            if blk is None:
                missing.append(h)
            else:
                peer.know(h)
                self.net.send(peer, "block", block=blk.encoded)
        if missing:
            self.net.send(peer, "notfound", hashes=missing)

    def on_notfound(self, peer: Peer, hashes: list[bytes]) -> None:
        for h in hashes:
            if peer.inflight.pop(h, None) is not None:
                self.inflight.pop(h, None)
        peer.stalls += 1
        self.schedule()

    async def on_headers(self, peer: Peer, headers: list[bytes]) -> None:
        import asyncio

        if not peer.headers_req_at:
            # we never announce by headers: unsolicited ones are ignored (and cost a little)
            self.net.misbehave(peer, 5, "unsolicited headers")
            return
        peer.headers_req_at = 0.0
        proved_before = peer.proven_work
        cfg = self.chain.cfg
        last = None
        for i, raw in enumerate(headers):
            try:
                h = Header.decode(raw, max_bytes=cfg.max_header_bytes)
            except EncodingError as e:
                self.net.misbehave(peer, BAN_SCORE, f"bad header encoding ({e})")
                return
            try:
                last = self.chain.submit_header(h)
            except ValidationError as e:
                if e.reason == "prev-blk-not-found":
                    self.net.misbehave(peer, 20, "headers do not connect")
                elif e.punish and not e.retry_later:
                    self.net.misbehave(peer, BAN_SCORE, f"invalid header: {e}")
                    return
                break
            peer.know(h.hash)
            self.note_entry(last)
            if i % 16 == 15:
                await asyncio.sleep(0)  # header proofs cost ~1 ms each: let others run
        if last is not None:
            self.peer_claims(peer, last.chainwork, last.height, last.hash)
        if peer.proven_work <= proved_before and peer.work > max(peer.proven_work, self.best_header.chainwork):
            self.claim_failed(peer, "answered getheaders without the chain it claims")
            return
        if len(headers) >= MAX_HEADERS or (
            last is not None and peer.work > self.best_header.chainwork and len(headers) > 0 and last.hash != peer.tip
        ):
            self.request_headers(peer)
        self.schedule()

    # --- block download --------------------------------------------------------------------------------
    def block_arrived(self, h: bytes) -> None:
        x = self.inflight.pop(h, None)
        if x is not None:
            x[0].inflight.pop(h, None)

    def needed(self) -> list:
        """Entries on the best header chain without data, oldest first (at most WINDOW)."""
        best = self.best_header
        if best.failed:
            self.best_header = best = self._scan_best()
        if best.chainwork <= self.chain.tip.chainwork:
            return []
        path = []
        e = best
        while not self.chain.is_active(e.hash):
            path.append(e)
            e = self.chain.index[e.prev]
        from chain import schema as S

        return [x for x in reversed(path) if not x.status & S.HAVE_DATA][:WINDOW]

    def schedule(self) -> None:
        need = [e for e in self.needed() if e.hash not in self.inflight]
        if not need:
            return
        if self.started_at is None:
            self.started_at = time.monotonic()
            self.start_height = self.chain.height
            event(
                log, logging.INFO, "sync downloading blocks", target=self.best_header.height, height=self.chain.height
            )
        peers = [p for p in self.net.ready_peers]
        batches: dict[int, list[bytes]] = {}
        now = time.monotonic()
        # refill a peer only when half its slots are free, so requests go out in batches
        peers = [p for p in peers if len(p.inflight) <= PER_PEER_INFLIGHT // 2]
        for e in need:
            cands = [p for p in peers if len(p.inflight) < PER_PEER_INFLIGHT and p.work >= e.chainwork]
            if not cands:
                break
            p = min(cands, key=lambda p: (len(p.inflight), p.stalls))
            p.inflight[e.hash] = now
            self.inflight[e.hash] = (p, now)
            batches.setdefault(id(p), []).append(e.hash)
        for p in peers:
            hs = batches.get(id(p))
            while hs:
                self.net.send(p, "getblocks", hashes=hs[:MAX_GETBLOCKS])
                hs = hs[MAX_GETBLOCKS:]

    def tick(self) -> None:
        """Periodic: time out requests, re-request, ask peers with more work for headers, log progress."""
        now = time.monotonic()
        for h, (p, t) in list(self.inflight.items()):
            if now - t > BLOCK_TIMEOUT:
                self.inflight.pop(h, None)
                p.inflight.pop(h, None)
                p.stalls += 1
                event(log, logging.INFO, "sync block timed out", hash=h.hex()[:16], peer=p.name, stalls=p.stalls)
                if p.stalls >= 3 and not p.closed:
                    self.net.drop(p, "stalled")
        for p in self.net.ready_peers:
            if p.headers_req_at and now - p.headers_req_at > HEADERS_TIMEOUT:
                p.headers_req_at = 0.0
                p.stalls += 1
                if p.work > max(p.proven_work, self.best_header.chainwork):
                    self.claim_failed(p, "did not answer getheaders")
                    continue
            if p.work > self.best_header.chainwork:
                self.request_headers(p)
        self.schedule()
        self.samples.append((now, self.chain.height))
        if self.syncing and now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            prog = self.progress()
            event(
                log,
                logging.INFO,
                "sync progress",
                height=prog["height"],
                target=prog["target_height"],
                percent=round(prog["percent"], 1),
                blocks_per_s=round(prog["blocks_per_s"], 1),
                eta_s=prog["eta_s"],
            )
        elif not self.syncing and self.started_at is not None:
            el = now - self.started_at
            n = self.chain.height - self.start_height
            event(
                log,
                logging.INFO,
                "sync done",
                height=self.chain.height,
                blocks=n,
                seconds=round(el, 1),
                blocks_per_s=round(n / max(el, 1e-3)),
            )
            self.started_at = None

    def progress(self) -> dict:
        now = time.monotonic()
        rate = 0.0
        recent = [(t, h) for t, h in self.samples if now - t <= 15.0]
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            rate = max(0.0, (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0]))
        target = max(self.best_header.height, self.chain.height)
        left = target - self.chain.height
        return {
            "syncing": self.syncing,
            "height": self.chain.height,
            "target_height": target,
            "percent": round(100.0 * self.chain.height / target, 2) if target else 100.0,
            "blocks_per_s": round(rate, 2),
            "eta_s": int(left / rate) if rate > 0 and left > 0 else (0 if left <= 0 else None),
            "inflight": len(self.inflight),
        }

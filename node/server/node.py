"""The node: chain + mempool + peers + sync + miner + HTTP API in one asyncio process.

Data directory layout: ``chaindata/`` (LevelDB, owned by chain.ChainState), ``node_key.json`` (the
Ed25519 node identity used in the p2p handshake; also the default mining address), ``mempool.dat``,
``peers.json``.

Every block, whatever its source (peer, sync, own miner, remote worker), goes through
`Node.accept_block`: ChainState validates it (proof first); on success the mempool is updated (mined txs
removed, disconnected txs restored), waiting orphans are processed, and the block is relayed to peers
that do not have it. Invalid blocks cost the sending peer its connection (ban); blocks whose parent is
unknown wait in a small orphan pool while headers are requested; `time-too-new` blocks are retried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from chain.block import Block
from chain.chainstate import ChainState, ImportResult
from chain.config import ChainConfig, load_config
from chain.difficulty import block_work
from chain.errors import EncodingError, KeyFileError, StorageError, ValidationError
from chain.keys import PrivateKey, load_key, save_key
from chain.tx import (
    KIND_JOB_ANSWER,
    KIND_JOB_CANCEL,
    KIND_JOB_CHALLENGE,
    KIND_JOB_CLAIM,
    KIND_JOB_DISPUTE,
    KIND_JOB_RESULT,
    KIND_JOB_SUBMIT,
    Transaction,
    check_tx,
    decode_tx,
)
from node.blobs import PRUNE_EVERY_S, BlobError
from node.logfmt import event
from node.server.mempool import Mempool, MempoolError
from node.server.messages import Codec
from node.server.metrics import Metrics, job_transitions
from node.server.miner import Miner, Templates
from node.server.p2p import P2P
from node.server.peers import BAN_SCORE, Peer, PeerBook
from node.server.sync import Sync

if TYPE_CHECKING:
    from node.server.paidjobs import PaidJobs

log = logging.getLogger("pouw.node")

NODE_KEY = "node_key.json"
MEMPOOL_FILE = "mempool.dat"
PEERS_FILE = "peers.json"
COOKIE_FILE = ".cookie"
BLOBS_DIR = "blobs"
MAX_ORPHANS = 64
ORPHAN_TTL = 600.0
JOB_KINDS = frozenset(
    {
        KIND_JOB_SUBMIT,
        KIND_JOB_CLAIM,
        KIND_JOB_RESULT,
        KIND_JOB_DISPUTE,
        KIND_JOB_CHALLENGE,
        KIND_JOB_ANSWER,
        KIND_JOB_CANCEL,
    }
)
PUNISHABLE_TX = {
    "bad-txn-encoding",
    "bad-txn-sig",
    "bad-txn-kind",
    "bad-txn-chainid",
    "bad-txn-size",
    "bad-txn-fee",
    "bad-txn-amount",
}


@dataclass
class NodeConfig:
    datadir: Path
    network: str | None = None  # config name or .toml; None: the one stored in the DB (devnet if new)
    host: str = "127.0.0.1"
    port: int = 8545  # API and p2p (websocket at /p2p); 0 picks a free port
    peers: list[str] = field(default_factory=list)
    mine: bool = False
    device: str = "cpu"
    miner_address: bytes | None = None  # default: the node key's address
    mine_interval: float = 0.0  # minimum seconds between this node's own blocks
    filler_shape: tuple[int, int, int] | None = None  # (m, k, n) of filler jobs (default: the chain config's)
    mempool_max_txs: int = 5000
    mempool_max_bytes: int = 5_000_000
    mempool_expiry_s: float = 3 * 3600
    max_outbound: int = 8
    max_inbound: int = 32
    api_max_body: int | None = None  # default: enough for a header with its proof, hex-encoded
    take_jobs: bool = True  # the miner claims paid jobs (cs.open_jobs()) before filler work
    job_bond: int | None = None  # bond posted with a claim (default: the chain's min_bond)
    job_tx_fee: int = 1000  # fee of this node's claim / result / answer transactions
    min_job_fee_rate: str | None = None  # the miner's fee floor, base units per multiply-add ("1/10000");
    # default: the chain's going rate (rate_num / rate_den)
    cheat_jobs: bool = False  # TESTS ONLY (in-process nodes; no flag or env sets it): corrupt C[0][0]
    blob_max_bytes: int | None = None  # default: node.blobs.max_blob_bytes(cfg) (the largest job's C)
    blob_retention_blocks: int = 1000  # keep a settled job's blobs this many blocks after it closed
    blob_grace_s: float = 600.0  # keep unreferenced blobs (uploads before their submit) this long
    blob_account_quota: int = 2 << 30  # unreferenced upload bytes one paying account may hold (node.server.blobgate)
    blob_pending_max: int = 8 << 30  # unreferenced upload bytes of all accounts together
    blob_store_max: int = 64 << 30  # bytes of blobs on disk; uploads beyond get 429 blob-store-full
    # --- listeners and limits (docs/operations.md) ---
    api_host: str | None = None  # a separate API listener (with api_port); default: host
    api_port: int | None = None  # None: the API shares host:port with p2p
    api_token: str | None = None  # bearer token for writes; None: a cookie file when the API is public
    api_allowed_hosts: list[str] = field(default_factory=list)  # Host names accepted besides IPs and localhost
    api_cors_origins: list[str] = field(default_factory=list)  # browser Origins allowed (none by default)
    max_conns: int = 1000  # open connections, all listeners (capped below the fd limit)
    max_conns_per_ip: int = 32
    header_timeout: float = 10.0  # seconds to deliver a request head (and the first after connect)
    idle_timeout: float = 30.0  # seconds an idle keep-alive HTTP connection stays open
    max_inbound_per_ip: int = 8  # authenticated inbound peers from one IP
    max_pending_peers: int = 16  # inbound connections still in the p2p handshake
    noban: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])  # IPs never banned by address
    min_free_bytes: int = 256 << 20  # below this free space in the datadir: storage fault (node.server.storagehealth)


def open_chain(datadir: Path, network: str | None) -> ChainState:
    cfg: ChainConfig | None = load_config(network) if network else None
    if cfg is None and not (datadir / "chaindata").exists():
        cfg = load_config("devnet")
    return ChainState.open(datadir, cfg)


def load_or_create_node_key(datadir: Path) -> PrivateKey:
    p = datadir / NODE_KEY
    if p.exists():
        return load_key(p)
    key = PrivateKey.generate()
    save_key(p, key, None, allow_unencrypted=True)
    return key


class Orphans:
    """Blocks whose parent is unknown, by hash and by parent (bounded, expiring)."""

    def __init__(self) -> None:
        self.blocks: collections.OrderedDict[bytes, tuple[Block, Peer | None, float]] = collections.OrderedDict()

    def add(self, block: Block, peer: Peer | None) -> None:
        if block.hash in self.blocks:
            return
        self.blocks[block.hash] = (block, peer, time.monotonic())
        while len(self.blocks) > MAX_ORPHANS:
            self.blocks.popitem(last=False)

    def children(self, parent: bytes) -> list[tuple[Block, Peer | None]]:
        out = [(b, p) for h, (b, p, _) in self.blocks.items() if b.header.prev_hash == parent]
        for b, _ in out:
            self.blocks.pop(b.hash, None)
        return out

    def expire(self) -> None:
        now = time.monotonic()
        for h in [h for h, (_, _, t) in self.blocks.items() if now - t > ORPHAN_TTL]:
            self.blocks.pop(h, None)


class Node:
    def __init__(self, conf: NodeConfig):
        self.conf = conf
        self.datadir = Path(conf.datadir)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.chain = open_chain(self.datadir, conf.network)
        from node.server.storagehealth import check_tip

        try:
            check_tip(self.chain, self.datadir)  # a damaged database refuses to start (node.server.storagehealth)
        except StorageError:
            self.chain.close()
            raise
        self.cfg = self.chain.cfg
        try:
            self.node_key = load_or_create_node_key(self.datadir)
        except KeyFileError:
            self.chain.close()
            raise
        self.codec = Codec(self.cfg.max_block_bytes, self.cfg.max_header_bytes, self.cfg.max_tx_bytes)
        self.metrics = Metrics(self)
        from node.server.storagehealth import StorageHealth

        self.storage = StorageHealth(self, conf.min_free_bytes)
        self.loop_lag = 0.0  # seconds the last 0.5 s tick ran late (event-loop lag, /metrics)
        self.mempool = Mempool(
            self.chain,
            max_txs=conf.mempool_max_txs,
            max_bytes=conf.mempool_max_bytes,
            expiry_s=conf.mempool_expiry_s,
            admit=self._admit_policy,
        )
        self.book = PeerBook(self.datadir / PEERS_FILE)
        self.port = conf.port
        self.p2p = P2P(
            self,
            self.book,
            max_outbound=conf.max_outbound,
            max_inbound=conf.max_inbound,
            max_inbound_per_ip=conf.max_inbound_per_ip,
            max_pending=conf.max_pending_peers,
            noban=tuple(conf.noban),
        )
        from node.server.netguard import ConnectionGuard, GuardLimits, fd_budget

        self.guard = ConnectionGuard(
            GuardLimits(
                max_conns=min(conf.max_conns, fd_budget()),
                max_per_ip=conf.max_conns_per_ip,
                header_timeout=conf.header_timeout,
                idle_timeout=conf.idle_timeout,
            )
        )
        self.api_port: int | None = conf.api_port
        from prometheus_client import ProcessCollector
        from node.server.netguard import GuardCollector

        ProcessCollector(namespace="pouw", registry=self.metrics.registry)  # open fds, memory, CPU
        self.metrics.registry.register(GuardCollector(self))
        self.api_token: str | None = conf.api_token
        self.sync = Sync(self.chain, self.p2p, self.codec.max_msg, self.metrics.misbehaviour.inc)
        self.p2p.register(
            {  # the chain's peer messages and who handles them (node.server.messages lists them all)
                "block": self.on_block,
                "tx": self.on_tx,
                "getheaders": self.sync.on_getheaders,
                "headers": self.sync.on_headers,
                "getblocks": self.sync.on_getblocks,
                "notfound": self.sync.on_notfound,
            }
        )
        self.templates = Templates(self)
        self.orphans = Orphans()
        self.retry_blocks: collections.OrderedDict[bytes, Block] = collections.OrderedDict()
        from chain.indexes import TxIndex

        self.txindex = TxIndex(lambda: self.chain.store)  # persisted, moves with the tip (chain/indexes.py)
        self._disconnected_txs: list[Transaction] = []  # from the listener, for imports that raise midway
        self.miner: Miner | None = None
        from node.blobs import BlobStore, max_blob_bytes

        cap = max_blob_bytes(self.cfg)
        self.blobs = BlobStore(
            self.datadir / BLOBS_DIR,
            min(cap, conf.blob_max_bytes or cap),
            retention_blocks=conf.blob_retention_blocks,
            orphan_grace_s=conf.blob_grace_s,
        )
        from node.server.blobgate import BlobGate

        self.blobgate = BlobGate(
            self,
            account_quota=conf.blob_account_quota,
            pending_max=conf.blob_pending_max,
            store_max=conf.blob_store_max,
            grace_s=conf.blob_grace_s,
        )
        self.paid_jobs: PaidJobs | None = None  # when mining with take_jobs
        self._fetching_c: set[bytes] = set()  # result txids whose C is being fetched before admission
        self._job_waiters: set[asyncio.Event] = set()  # long-polls of GET /jobs/{id}?wait= (wait_job_event)
        self.workers: dict[str, dict] = {}  # remote worker id -> {"work_rate", "seen", "device", "address"}
        self.runners: list[web.AppRunner] = []
        self.started_at = time.time()
        self.tick_task: asyncio.Task | None = None
        self.chain.add_listener(self)

    # --- properties --------------------------------------------------------------------------------------
    @property
    def listen_addr(self) -> str:
        return f"{self.conf.host}:{self.port}"

    @property
    def api_host(self) -> str:
        """The API listener's address: the p2p listener's when shared, else api_host (default loopback)."""
        if self.conf.api_port is None:
            return self.conf.host
        return self.conf.api_host or "127.0.0.1"

    @property
    def url(self) -> str:
        """The HTTP API's URL (the p2p listener's when the API shares it)."""
        if self.api_port is None:
            return f"http://{self.conf.host}:{self.port}"
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def mining_address(self) -> bytes:
        return self.conf.miner_address or self.node_key.address

    def work_rate(self) -> float:
        """This node's miner rate plus the rates its remote workers reported in the last 30 s (MAC/s)."""
        now = time.time()
        own = self.miner.rate.rate() if self.miner else 0.0
        return own + sum(w["work_rate"] for w in self.workers.values() if now - w["seen"] < 30)

    # --- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        from node.server.api import make_app

        n = self.mempool.load(self.datadir / MEMPOOL_FILE)
        event(
            log,
            logging.INFO,
            "node starting",
            chain=self.cfg.name,
            chain_id=self.cfg.chain_id,
            height=self.chain.height,
            tip=self.chain.tip.hash.hex()[:16],
            mempool_restored=n,
            node_id=self.node_key.pubkey.hex()[:16],
        )
        from node.server.netguard import install_log_limits, is_loopback

        install_log_limits()
        api_public = not is_loopback(self.api_host)
        if api_public and not self.api_token:
            self.api_token = self._write_cookie()
        if self.conf.mine:
            self.miner = Miner(
                self, self.conf.device, self.mining_address, self.conf.mine_interval, self.conf.filler_shape
            )
            self.miner.open_device()  # before serving: importing torch holds the GIL for seconds (issue 16)
        if self.conf.api_port is None:
            self.port = await self._listen(make_app(self), self.conf.host, self.conf.port)
        else:
            from node.server.api import make_p2p_app

            self.port = await self._listen(make_p2p_app(self), self.conf.host, self.conf.port)
            self.api_port = await self._listen(make_app(self, p2p=False), self.api_host, self.conf.api_port)
        await self.guard.start()
        if api_public:
            event(
                log,
                logging.WARNING,
                "HTTP API on a public address: anyone who reaches it reads the chain, writes need the token",
                api=self.url,
                token_file=str(self.datadir / COOKIE_FILE) if not self.conf.api_token else None,
                hint="--api-host 127.0.0.1 keeps it local",
            )
        for a in self.conf.peers:
            self.p2p.add_addr(a)
        await self.p2p.start()
        self.tick_task = asyncio.ensure_future(self._ticker())
        self.scan_task = asyncio.ensure_future(self.storage.scan())
        if self.miner is not None:  # built above when conf.mine
            if self.conf.take_jobs:
                from node.server.paidjobs import PaidJobs

                cheat = self.conf.cheat_jobs
                if cheat:
                    event(log, logging.WARNING, "CHEATING MINER: results of paid jobs will be corrupted (tests only)")
                self.paid_jobs = PaidJobs(
                    self,
                    bond=self.conf.job_bond or self.cfg.jobs.min_bond,
                    tx_fee=self.conf.job_tx_fee,
                    cheat=cheat,
                    min_fee_rate=self.job_fee_floor,
                )
            self.miner.start()
        event(log, logging.INFO, "node serving", api=self.url, p2p=self.listen_addr)

    async def _listen(self, app: web.Application, host: str, port: int) -> int:
        """Serve `app` on host:port through the connection guard; returns the bound port."""
        from node.server.netguard import GuardedSite

        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            keepalive_timeout=self.guard.limits.idle_timeout,
        )
        await runner.setup()
        self.runners.append(runner)
        site = GuardedSite(runner, host, port, self.guard)
        await site.start()
        return site.port

    def _write_cookie(self) -> str:
        """A fresh random API token in <datadir>/.cookie (mode 0600), as bitcoind does."""
        import os
        import secrets

        token = secrets.token_hex(32)
        p = self.datadir / COOKIE_FILE
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        return token

    async def stop(self) -> None:
        event(log, logging.INFO, "shutting down")
        if self.miner is not None:
            await self.miner.stop()
        if getattr(self, "scan_task", None) is not None:
            self.storage.stop_scan.set()  # the scan's thread stops at its next record; wait for it
            try:
                await self.scan_task
            except (asyncio.CancelledError, Exception):
                pass
        if self.tick_task is not None:
            self.tick_task.cancel()
            try:
                await self.tick_task
            except (asyncio.CancelledError, Exception):
                pass
        await self.p2p.stop()
        for runner in self.runners:
            await runner.cleanup()
        await self.guard.stop()
        n = self.mempool.save(self.datadir / MEMPOOL_FILE)
        self.book.save()
        self.chain.close()
        event(log, logging.INFO, "node stopped", height=self.chain.height, mempool_saved=n)

    async def run_forever(self) -> None:
        """Start, serve until SIGINT/SIGTERM, stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()

    async def _ticker(self) -> None:
        n = 0
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.5)
            self.loop_lag = max(0.0, time.monotonic() - t0 - 0.5)
            n += 1
            try:
                self.storage.tick()
                self.sync.tick()
                self._retry_blocks()
                if n % 20 == 0:
                    self.orphans.expire()
                    if self.mempool.expire():
                        self.metrics.update()
                if n % 10 == 0:
                    await self.book.flush()
                if n % int(PRUNE_EVERY_S * 2) == 0:
                    self.blobs.prune(self.chain.jobs(), self.chain.height)
            except Exception:
                event(log, logging.ERROR, "tick failed", exc_info=True)

    # --- chain listener ----------------------------------------------------------------------------------
    def block_connected(self, block: Block) -> None:
        self.metrics.blocks_connected.inc()
        event(
            log,
            logging.INFO,
            "block connected",
            height=block.height,
            hash=block.hash.hex()[:16],
            txs=len(block.txs),
            work=block_work(block.header.target),
            job_macs=block.header.job.macs,
        )
        for jid, before, after in job_transitions(self.chain, block):
            closed = not after.live
            event(
                log,
                logging.INFO if closed else logging.DEBUG,
                "job settled" if closed else "job updated",
                job=jid.hex()[:16],
                status=after.status_name,
                was=before.status_name if before else None,
                height=block.height,
                fee=after.fee,
                macs=after.macs,
                miner=after.miner.hex(),
            )

    def block_disconnected(self, block: Block) -> None:
        self._disconnected_txs.extend(block.txs)
        self.metrics.blocks_disconnected.inc()
        event(
            log, logging.INFO, "block disconnected", height=block.height, hash=block.hash.hex()[:16], txs=len(block.txs)
        )

    # --- blocks ------------------------------------------------------------------------------------------
    def accept_block(self, block: Block, peer: Peer | None) -> ImportResult | None:
        """Validate and import a block from any source; update mempool, orphans, relay. None if rejected."""
        todo: list[tuple[Block, Peer | None]] = [(block, peer)]
        first: ImportResult | None = None
        while todo:
            b, p = todo.pop()
            res = self._import_one(b, p)
            if b is block:
                first = res
            if res is not None:
                todo.extend(self.orphans.children(b.hash))
        return first

    def _import_one(self, block: Block, peer: Peer | None) -> ImportResult | None:
        if not self.storage.ok:  # cannot write: the block comes again once storage recovers (sync)
            return None
        self._disconnected_txs.clear()
        old_tip = self.chain.tip.hash
        try:
            res = self.chain.submit_block(block)
        except StorageError as e:
            self.storage.failed(str(e))
            return None
        except ValidationError as e:
            if self.chain.tip.hash != old_tip:  # the chain moved before failing (reorg that hit an invalid block)
                back = [t for t in self._disconnected_txs if t.txid not in self.txindex]
                self.mempool.resync(back)
            self._disconnected_txs.clear()
            if e.reason == "prev-blk-not-found":
                self.orphans.add(block, peer)
                if peer is not None:
                    self.sync.request_headers(peer)
                return None
            if e.retry_later:
                event(log, logging.INFO, "block deferred", hash=block.hash.hex()[:16], why=str(e))
                self.retry_blocks[block.hash] = block
                while len(self.retry_blocks) > 32:
                    self.retry_blocks.popitem(last=False)
                return None
            event(
                log,
                logging.WARNING,
                "block rejected",
                height=block.height,
                hash=block.hash.hex()[:16],
                peer=peer.name if peer else "local",
                reason=e.reason,
                detail=str(e),
            )
            self.metrics.blocks_rejected.inc()
            if peer is not None and e.punish:
                self.p2p.misbehave(peer, BAN_SCORE, f"invalid block ({e.reason})")
            self.sync.note_entry(self.chain.tip)
            return None
        entry = self.chain.index.get(block.hash)
        if entry is not None:
            self.sync.note_entry(entry)
            if peer is not None:
                self.sync.peer_claims(peer, entry.chainwork, entry.height, entry.hash)
        if res.status == "duplicate":
            return res
        if res.disconnected:
            self.metrics.reorgs.inc()
            event(
                log,
                logging.WARNING,
                "reorg",
                disconnected=len(res.disconnected),
                connected=len(res.connected),
                height=self.chain.height,
                tip=self.chain.tip.hash.hex()[:16],
            )
        if res.connected or res.disconnected:
            for b in res.connected:
                self.mempool.remove_mined(b.txs)
            back = res.disconnected_txs
            if back or res.disconnected:
                n = self.mempool.resync(back)
                event(log, logging.INFO, "mempool txs restored after reorg", count=n)
                for t in back:
                    if t.txid in self.mempool:
                        self.p2p.broadcast("tx", known=t.txid, tx=t.encoded)
            else:
                self.mempool.resync()
            self.metrics.update()
            self._notify_jobs()
        if res.status == "active":
            if peer is not None:
                peer.last_block_at = time.monotonic()
            self.p2p.broadcast("block", known=block.hash, exclude=peer, block=block.encoded)
        return res

    def _retry_blocks(self) -> None:
        for h, b in list(self.retry_blocks.items()):
            if b.header.timestamp <= time.time() + self.cfg.max_future_drift:
                del self.retry_blocks[h]
                self.accept_block(b, None)

    # --- p2p handlers (registered with P2P in __init__, called for ready peers) -----------------------------
    def on_block(self, peer: Peer, block: bytes) -> None:
        try:
            b = Block.decode(
                block, max_bytes=self.cfg.max_block_bytes + self.cfg.max_header_bytes, max_txs=self.cfg.max_block_txs
            )
        except EncodingError as e:
            self.p2p.misbehave(peer, BAN_SCORE, f"malformed block ({e})")
            return
        peer.know(b.hash)
        self.sync.block_arrived(b.hash)
        self.accept_block(b, peer)
        if len(self.sync.inflight) < 64:
            self.sync.schedule()

    def on_tx(self, peer: Peer, tx: bytes) -> None:
        try:
            t = decode_tx(tx, self.cfg.max_tx_bytes)
        except EncodingError as e:
            self.p2p.misbehave(peer, BAN_SCORE, f"malformed transaction ({e})")
            return
        peer.know(t.txid)
        if t.kind == KIND_JOB_RESULT and not self.blobs.has(t.payload.h_c):
            # relay and mine a result only while holding its C: fetch it (checked against H_C) first
            if t.txid not in self._fetching_c:
                self._fetching_c.add(t.txid)
                asyncio.ensure_future(self._admit_result(t, peer))
            return
        try:
            self.add_tx(t, peer)
        except ValidationError as e:
            if e.reason in PUNISHABLE_TX:
                self.p2p.misbehave(peer, BAN_SCORE, f"invalid transaction ({e.reason})")

    async def _admit_result(self, tx: Transaction, peer: Peer) -> None:
        try:
            try:
                check_tx(tx, self.cfg.chain_id, self.cfg.max_tx_bytes)  # before fetching anything for it
            except ValidationError as e:
                if e.reason in PUNISHABLE_TX:
                    self.p2p.misbehave(peer, BAN_SCORE, f"invalid transaction ({e.reason})")
                return
            if await self.fetch_blob(tx.payload.h_c) is None:
                event(
                    log,
                    logging.INFO,
                    "result C not available from the peers; not relayed",
                    txid=tx.txid.hex()[:16],
                    h_c=tx.payload.h_c.hex()[:16],
                )
                return
            try:
                self.add_tx(tx, peer)
            except ValidationError:
                pass
        finally:
            self._fetching_c.discard(tx.txid)

    def _admit_policy(self, tx: Transaction) -> None:
        """Every mempool admission (API, peers, resync after a reorg, reload): a job result only while
        this node holds its C, so whatever it relays or mines it also serves."""
        if tx.kind == KIND_JOB_RESULT and not self.blobs.has(tx.payload.h_c):
            raise MempoolError("job-result-unavailable", "this node does not hold the result's C (H_C)", punish=False)

    @property
    def job_fee_floor(self):
        """This node's minimum fee per multiply-add for paid jobs (a Fraction)."""
        from node.server.jobinfo import fee_floor

        return fee_floor(self.conf.min_job_fee_rate, self.cfg)

    def add_tx(self, tx: Transaction, peer: Peer | None = None) -> bool:
        """Admit a transaction to the mempool and relay it. Raises TxError/MempoolError. A job result
        is admitted only while this node holds its C (`job-result-unavailable`)."""
        if tx.txid in self.txindex:
            raise MempoolError("txn-already-known", "transaction already in the chain", punish=False)
        added = self.mempool.add(tx)
        if added and tx.kind == KIND_JOB_SUBMIT and self.paid_jobs is not None:
            self.paid_jobs.on_submit()  # start fetching operands now, not at the next mining pass
        if added:
            if peer is not None:
                peer.last_tx_at = time.monotonic()
            self.p2p.broadcast("tx", known=tx.txid, exclude=peer, tx=tx.encoded)
            self.metrics.update()
            if tx.kind in JOB_KINDS:
                self._notify_jobs()
        return added

    # --- job long-polls (GET /api/v1/jobs/{id}?wait=S) -----------------------------------------------------
    MAX_JOB_WAITERS = 1024

    def _notify_jobs(self) -> None:
        """A block connected (or disconnected) or a job transaction entered the mempool: wake the long-polls."""
        for ev in self._job_waiters:
            ev.set()

    async def wait_job_event(self, timeout: float) -> bool:
        """Wait until the next block or job transaction (True) or `timeout` seconds (False). Answers False
        at once when MAX_JOB_WAITERS requests already wait (the client then polls)."""
        if len(self._job_waiters) >= self.MAX_JOB_WAITERS or timeout <= 0:
            return False
        ev = asyncio.Event()
        self._job_waiters.add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._job_waiters.discard(ev)

    # --- blobs -------------------------------------------------------------------------------------------
    async def fetch_blob(self, h: bytes, timeout: float = 20.0) -> bytes | None:
        """The blob with address `h`: from the local store, else from the peers' HTTP APIs (each answer
        is size-capped and hash-checked, then stored). None when nobody has it."""
        data = self.blobs.get(h)
        if data is not None:
            return data
        import aiohttp

        addrs = [p.listen_addr for p in self.p2p.ready_peers if p.listen_addr]
        for extra in self.conf.peers:
            if extra not in addrs:
                addrs.append(extra)
        cap = self.blobs.max_bytes
        for addr in addrs:
            url = f"http://{addr}/api/v1/blobs/{h.hex()}?local=1"
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                    async with s.get(url) as r:
                        if r.status != 200:
                            continue
                        if (r.content_length or 0) > cap:
                            continue
                        buf = bytearray()
                        async for chunk in r.content.iter_chunked(1 << 16):
                            buf += chunk
                            if len(buf) > cap:
                                raise BlobError("blob-too-large", f"peer {addr} sent more than {cap} bytes")
                data = bytes(buf)
                self.blobs.put(data, expect=h)
                event(log, logging.INFO, "blob fetched", hash=h.hex()[:16], peer=str(addr), size_bytes=len(data))
                return data
            except (BlobError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                event(log, logging.INFO, "blob fetch failed", hash=h.hex()[:16], peer=str(addr), why=str(e))
        return None

    # --- remote workers ----------------------------------------------------------------------------------
    def submit_work(self, work_id: str, header_bytes: bytes) -> tuple[str, ImportResult | None, str]:
        """A remote worker's solved header for a template. Returns (result, import result, reason)."""
        from chain.block import Header

        w = self.templates.get(work_id)
        if w is None:
            return "stale", None, "unknown or expired template"
        try:
            h = Header.decode(header_bytes, max_bytes=self.cfg.max_header_bytes)
        except EncodingError as e:
            return "rejected", None, e.reason
        t = w.template.header
        if (h.prev_hash, h.height, h.timestamp, h.target, h.tx_root, h.state_root, h.miner) != (
            t.prev_hash,
            t.height,
            t.timestamp,
            t.target,
            t.tx_root,
            t.state_root,
            t.miner,
        ):
            return "rejected", None, "header does not match the template"
        block = Block(h, w.template.txs)
        res = self.accept_block(block, None)
        if res is None:
            return "rejected", None, "invalid block (see node log)"
        if res.status == "duplicate":
            return "duplicate", res, ""
        return ("accepted" if res.status == "active" else "stale"), res, ""

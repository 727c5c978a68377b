"""The narrow interfaces between the node's parts (typing.Protocol: checked by mypy, nothing at run time).

A part takes the interface it needs instead of the whole `node.server.node.Node`, so it imports no sibling but
this module and the leaves (`node.server.peers`, `node.server.messages`); tests/test_node_imports.py keeps `node/` free of
import cycles. Who implements what:

- `PeerHost`    what the peer layer reads of the node: identity, network, tip, address (node.server.node.Node)
- `PeerNet`     the peer layer as sync and the block/tx handlers see it (node.server.p2p.P2P)
- `PeerEvents`  what the peer layer tells sync about connections (node.server.sync.Sync)
- `NodeView`    the chain and mempool as readers see them: API, job info, blob gate (node.server.node.Node)
- `JobsHost`    NodeView plus the fee floor and job long-polls, for node.server.jobs_api
- `BlobsHost`   the blob store, upload gate and peer fetch, for node.server.blobs_api
- `TxHost`      NodeView, the transaction sink and the tx index, for node.server.tx_api
- `StorageHost` what the storage watchdog needs: data directory, chain store, a miner to pause
- `BlockSink`   where every block goes, whatever its source (node.server.node.Node.accept_block)
- `TxSink`      where every transaction goes, API or peer (node.server.node.Node.add_tx)
- `TipEvents`   a chain listener: blocks connected to / disconnected from the active chain (chain.ChainState
                calls them; node.server.node.Node is one)
- `SyncView`    sync as readers see it: syncing?, best header, progress (node.server.sync.Sync)
- `PeerList`    the connected peers, read-only (node.server.p2p.P2P); `PeerListener` adds the inbound websocket
- `MinerCounters`, `MinerStatus`, `PaidWork`, `TemplateSource`: the miner's counters, the miner as the status
                and metrics read it (node.server.miner.Miner), the paid-job driver as the miner drives it
                (node.server.paidjobs.PaidJobs), the block templates (node.server.miner.Templates)
- `TemplatesHost` chain, mempool and the named remote workers, for node.server.miner.Templates
- `MinerHost`   what the mining loop uses: templates, the block sink, sync state, paid jobs, counters
- `PaidJobsHost` TxHost plus the node's key and blob fetching, for node.server.paidjobs.PaidJobs
- `MetricsHost` what node.server.metrics.Metrics reads at scrape time
- `StatusHost`, `MiningHost`, `ApiGuardHost`, `ApiHost`: the status/peers/metrics routes, the remote-worker
                routes, the request checks, and everything node.server.api.make_app assembles

Nothing here imports a part of the node: only the leaves (`node.blobs`, `node.server.mempool`, `node.server.messages`,
`node.server.peers`) and chain/, under TYPE_CHECKING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping
    from fractions import Fraction
    from pathlib import Path

    from aiohttp import web
    from prometheus_client import Counter

    from chain.block import Block
    from chain.chainstate import ChainState, ImportResult, IndexEntry
    from chain.config import ChainConfig
    from chain.indexes import TxIndex
    from chain.keys import PrivateKey
    from chain.mining import BlockTemplate
    from chain.tx import Transaction
    from node.blobs import BlobStore
    from node.server.mempool import Mempool
    from node.server.messages import Codec
    from node.server.peers import Peer, PeerBook


class PeerNet(Protocol):
    """Send to, penalise and drop ready peers."""

    @property
    def ready_peers(self) -> list[Peer]: ...

    def send(self, peer: Peer, t: str, **fields: Any) -> None: ...

    def misbehave(self, peer: Peer, points: int, why: str) -> None: ...

    def drop(self, peer: Peer, why: str) -> None:
        """Close the connection soon (not a ban)."""


class PeerEvents(Protocol):
    def on_peer_ready(self, peer: Peer) -> None: ...

    def on_peer_gone(self, peer: Peer) -> None: ...


class PeerCounters(Protocol):
    @property
    def misbehaviour(self) -> Counter: ...

    @property
    def peer_bans(self) -> Counter: ...


class PeerHost(Protocol):
    """Read-only: the handshake's identity and tip, the listen address (known once listening), whom to tell
    about connections, and the peer counters."""

    @property
    def codec(self) -> Codec: ...

    @property
    def cfg(self) -> ChainConfig: ...

    @property
    def chain(self) -> ChainState: ...

    @property
    def node_key(self) -> PrivateKey: ...

    @property
    def port(self) -> int: ...

    @property
    def listen_addr(self) -> str: ...

    @property
    def sync(self) -> PeerEvents: ...

    @property
    def metrics(self) -> PeerCounters: ...


class NodeView(Protocol):
    """The network's parameters, the chain, the mempool and the blob store, for readers (they call no
    method that changes them)."""

    @property
    def cfg(self) -> ChainConfig: ...

    @property
    def chain(self) -> ChainState: ...

    @property
    def mempool(self) -> Mempool: ...

    @property
    def blobs(self) -> BlobStore: ...


class JobsHost(NodeView, Protocol):
    """The job endpoints' view: NodeView, this node's fee floor, and a wait for the next job event."""

    @property
    def job_fee_floor(self) -> Fraction: ...

    async def wait_job_event(self, timeout: float) -> bool: ...


class BlobUploads(Protocol):
    async def upload(self, request: web.Request) -> web.Response:
        """Admit, stream, check and store one upload (node.server.blobgate.BlobGate)."""


class BlobsHost(Protocol):
    """The blob endpoints' view: the store, the upload gate, and fetching from peers."""

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def blobgate(self) -> BlobUploads: ...

    async def fetch_blob(self, h: bytes, timeout: float = 20.0) -> bytes | None: ...


class Pausable(Protocol):
    enabled: bool


class StorageHost(Protocol):
    @property
    def datadir(self) -> Path: ...

    @property
    def chain(self) -> ChainState: ...

    @property
    def miner(self) -> Pausable | None: ...


class BlockSink(Protocol):
    def accept_block(self, block: Block, peer: Peer | None) -> ImportResult | None:
        """Validate and import; None when rejected (and the peer, if any, penalised)."""


class TxSink(Protocol):
    def add_tx(self, tx: Transaction, peer: Peer | None = None) -> bool:
        """Admit to the mempool and relay; raises the rejection (TxError/MempoolError)."""


class TxHost(NodeView, TxSink, Protocol):
    """The transaction endpoints' view: NodeView, the transaction sink, and the index of mined txids."""

    @property
    def txindex(self) -> TxIndex: ...


class TipEvents(Protocol):
    def block_connected(self, block: Block) -> None: ...

    def block_disconnected(self, block: Block) -> None: ...


# --- sync, peers, miner as other parts read them ----------------------------------------------------------


class SyncView(Protocol):
    @property
    def syncing(self) -> bool: ...

    @property
    def best_header(self) -> IndexEntry: ...

    def progress(self) -> dict[str, Any]: ...


class PeerList(Protocol):
    @property
    def ready_peers(self) -> list[Peer]: ...


class PeerListener(PeerList, Protocol):
    async def handle_inbound(self, request: web.Request) -> web.StreamResponse:
        """Serve one inbound peer's websocket until it closes."""


class MinerCounters(Protocol):
    @property
    def mined_macs(self) -> Counter: ...

    @property
    def paid_macs(self) -> Counter: ...

    @property
    def tickets(self) -> Counter: ...

    @property
    def device_faults(self) -> Counter: ...

    @property
    def blocks_mined(self) -> Counter: ...


class DeviceStatus(Protocol):
    @property
    def spec(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def total_faults(self) -> int: ...


class Rate(Protocol):
    def rate(self) -> float: ...


class FillerShape(Protocol):
    @property
    def shape(self) -> tuple[int, int, int]: ...


class MinerStatus(Protocol):
    """The node's miner as the status endpoint and the metrics read it."""

    @property
    def enabled(self) -> bool: ...

    @property
    def state(self) -> str: ...

    @property
    def device(self) -> DeviceStatus: ...

    @property
    def blocks_found(self) -> int: ...

    @property
    def rate(self) -> Rate: ...

    @property
    def filler(self) -> FillerShape: ...

    def useful_work(self) -> tuple[int, int, float]: ...


class PaidPass(Protocol):
    @property
    def job_id(self) -> bytes: ...

    @property
    def prepared(self) -> Any: ...  # pouw.miner.PreparedJob


class PaidWork(Protocol):
    """The paid-job driver as the mining loop drives it: `step` names the job to mine now (or None),
    `finished` takes the pass's C; `ready` is set when a job turns ready."""

    @property
    def ready(self) -> asyncio.Event: ...

    def step(self) -> Any: ...  # a PaidPass or None

    async def finished(self, job: Any, c: Any) -> None: ...


class WorkView(Protocol):
    """One block template handed out (node.server.miner.Work)."""

    @property
    def id(self) -> str: ...

    @property
    def template(self) -> BlockTemplate: ...

    @property
    def tip(self) -> bytes: ...


class TemplateSource(Protocol):
    def current(self, address: bytes) -> WorkView: ...

    def for_worker(self, worker: str, address: bytes) -> WorkView: ...


class TemplatesHost(Protocol):
    @property
    def chain(self) -> ChainState: ...

    @property
    def mempool(self) -> Mempool: ...

    @property
    def workers(self) -> Mapping[str, Any]: ...


class MinerHost(BlockSink, Protocol):
    """What the mining loop uses: the network and chain, templates, sync state, paid jobs and its counters;
    every block it finds goes to `accept_block`."""

    @property
    def cfg(self) -> ChainConfig: ...

    @property
    def chain(self) -> ChainState: ...

    @property
    def templates(self) -> TemplateSource: ...

    @property
    def sync(self) -> SyncView: ...

    @property
    def paid_jobs(self) -> PaidWork | None: ...

    @property
    def metrics(self) -> MinerCounters: ...


class PaidJobsHost(TxHost, Protocol):
    """The paid-job driver's view: TxHost (chain, mempool, blobs, the tx sink and index), the key it signs
    claims and results with, and blob fetching from peers."""

    @property
    def node_key(self) -> PrivateKey: ...

    @property
    def mining_address(self) -> bytes: ...

    async def fetch_blob(self, h: bytes, timeout: float = 20.0) -> bytes | None: ...


class MetricsHost(Protocol):
    """What the metrics read at scrape time."""

    @property
    def cfg(self) -> ChainConfig: ...

    @property
    def chain(self) -> ChainState: ...

    @property
    def mempool(self) -> Mempool: ...

    @property
    def p2p(self) -> PeerList: ...

    @property
    def sync(self) -> SyncView: ...

    @property
    def miner(self) -> MinerStatus | None: ...

    def work_rate(self) -> float: ...


# --- the HTTP API's views -------------------------------------------------------------------------------


class StorageStatus(Protocol):
    @property
    def ok(self) -> bool: ...

    def json(self) -> dict[str, Any]: ...


class Scrape(Protocol):
    def render(self) -> bytes: ...


class StatusHost(NodeView, Protocol):
    """The status, peers and metrics endpoints' view."""

    @property
    def node_key(self) -> PrivateKey: ...

    @property
    def p2p(self) -> PeerList: ...

    @property
    def book(self) -> PeerBook: ...

    @property
    def sync(self) -> SyncView: ...

    @property
    def miner(self) -> MinerStatus | None: ...

    @property
    def storage(self) -> StorageStatus: ...

    @property
    def mining_address(self) -> bytes: ...

    @property
    def workers(self) -> Mapping[str, dict[str, Any]]: ...

    @property
    def started_at(self) -> float: ...

    @property
    def metrics(self) -> Scrape: ...

    def work_rate(self) -> float: ...


class MiningConf(Protocol):
    @property
    def filler_shape(self) -> tuple[int, int, int] | None: ...


class MiningHost(Protocol):
    """The remote-worker endpoints' view (getblocktemplate pattern, node.client.worker)."""

    @property
    def cfg(self) -> ChainConfig: ...

    @property
    def conf(self) -> MiningConf: ...

    @property
    def mining_address(self) -> bytes: ...

    @property
    def workers(self) -> dict[str, dict[str, Any]]: ...

    @property
    def sync(self) -> SyncView: ...

    @property
    def templates(self) -> TemplateSource: ...

    @property
    def miner(self) -> MinerStatus | None: ...

    def submit_work(self, work_id: str, header_bytes: bytes) -> tuple[str, ImportResult | None, str]: ...


class ApiConf(MiningConf, Protocol):
    @property
    def api_cors_origins(self) -> list[str]: ...

    @property
    def api_allowed_hosts(self) -> list[str]: ...

    @property
    def api_max_body(self) -> int | None: ...


class ApiGuardHost(Protocol):
    """What the request checks read: allowed origins and hosts, the blob cap, the API token."""

    @property
    def conf(self) -> ApiConf: ...

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def api_token(self) -> str | None: ...


class ApiHost(StatusHost, MiningHost, JobsHost, BlobsHost, TxHost, ApiGuardHost, Protocol):
    """Everything node.server.api.make_app assembles: each route module takes its own narrower view."""

    @property
    def conf(self) -> ApiConf: ...

    @property
    def p2p(self) -> PeerListener: ...

    @property
    def workers(self) -> dict[str, dict[str, Any]]: ...

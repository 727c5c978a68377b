"""The narrow interfaces between the node's parts (typing.Protocol: checked by mypy, nothing at run time).

A part takes the interface it needs instead of the whole `node.node.Node`, so it imports no sibling but
this module and the leaves (`node.peers`, `node.messages`); tests/test_node_imports.py keeps `node/` free of
import cycles. Who implements what:

- `PeerHost`    what the peer layer reads of the node: identity, network, tip, address (node.node.Node)
- `PeerNet`     the peer layer as sync and the block/tx handlers see it (node.p2p.P2P)
- `PeerEvents`  what the peer layer tells sync about connections (node.sync.Sync)
- `NodeView`    the chain and mempool as readers see them: API, job info, blob gate (node.node.Node)
- `JobsHost`    NodeView plus the fee floor and job long-polls, for node.jobs_api
- `BlobsHost`   the blob store, upload gate and peer fetch, for node.blobs_api
- `TxHost`      NodeView, the transaction sink and the tx index, for node.tx_api
- `StorageHost` what the storage watchdog needs: data directory, chain store, a miner to pause
- `BlockSink`   where every block goes, whatever its source (node.node.Node.accept_block)
- `TxSink`      where every transaction goes, API or peer (node.node.Node.add_tx)
- `TipEvents`   a chain listener: blocks connected to / disconnected from the active chain (chain.ChainState
                calls them; node.node.Node is one)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fractions import Fraction
    from pathlib import Path

    from aiohttp import web
    from prometheus_client import Counter

    from chain.block import Block
    from chain.chainstate import ChainState, ImportResult
    from chain.config import ChainConfig
    from chain.indexes import TxIndex
    from chain.keys import PrivateKey
    from chain.tx import Transaction
    from node.blobs import BlobStore
    from node.mempool import Mempool
    from node.messages import Codec
    from node.peers import Peer


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
        """Admit, stream, check and store one upload (node.blobgate.BlobGate)."""


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

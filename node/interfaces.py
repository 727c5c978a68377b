"""The narrow interfaces between the node's parts (typing.Protocol: checked by mypy, nothing at run time).

A part takes the interface it needs instead of the whole `node.node.Node`, so it imports no sibling but
this module and the leaves (`node.peers`, `node.messages`); tests/test_node_imports.py keeps `node/` free of
import cycles. Who implements what:

- `PeerNet`     the peer layer as sync and the block/tx handlers see it (node.p2p.P2P)
- `PeerEvents`  what the peer layer tells sync about connections (node.sync.Sync)
- `BlockSink`   where every block goes, whatever its source (node.node.Node.accept_block)
- `TxSink`      where every transaction goes, API or peer (node.node.Node.add_tx)
- `TipEvents`   a chain listener: blocks connected to / disconnected from the active chain (chain.ChainState
                calls them; node.node.Node is one)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chain.block import Block
    from chain.chainstate import ImportResult
    from chain.tx import Transaction
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


class BlockSink(Protocol):
    def accept_block(self, block: Block, peer: Peer | None) -> ImportResult | None:
        """Validate and import; None when rejected (and the peer, if any, penalised)."""


class TxSink(Protocol):
    def add_tx(self, tx: Transaction, peer: Peer | None = None) -> bool:
        """Admit to the mempool and relay; raises the rejection (TxError/MempoolError)."""


class TipEvents(Protocol):
    def block_connected(self, block: Block) -> None: ...

    def block_disconnected(self, block: Block) -> None: ...

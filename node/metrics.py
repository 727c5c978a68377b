"""Prometheus metrics of one node (own registry, so several nodes can share a process in tests)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

if TYPE_CHECKING:
    from node.node import Node


class Metrics:
    def __init__(self, node: "Node"):
        self.node = node
        r = self.registry = CollectorRegistry()
        self.height = Gauge("pouw_chain_height", "Height of the active chain", registry=r)
        self.peers = Gauge("pouw_peers", "Connected (authenticated) peers", registry=r)
        self.mempool_txs = Gauge("pouw_mempool_transactions", "Transactions in the mempool", registry=r)
        self.mempool_bytes = Gauge("pouw_mempool_bytes", "Bytes of transactions in the mempool", registry=r)
        self.work_rate = Gauge("pouw_work_rate_macs_per_second",
                               "Multiply-adds of mined jobs per second (node miner + remote workers, 60 s window)",
                               registry=r)
        self.difficulty = Gauge("pouw_difficulty_macs", "Expected multiply-adds per block at the next target",
                                registry=r)
        self.sync_rate = Gauge("pouw_sync_blocks_per_second", "Blocks connected per second (15 s window)", registry=r)
        self.blocks_connected = Counter("pouw_blocks_connected", "Blocks connected to the active chain", registry=r)
        self.blocks_rejected = Counter("pouw_blocks_rejected", "Blocks rejected as invalid", registry=r)
        self.misbehaviour = Counter("pouw_peer_misbehaviour", "Misbehaviour events of peers", registry=r)
        self.device_faults = Counter("pouw_device_faults", "Compute device faults in the miner", registry=r)
        self.mined_macs = Counter("pouw_mined_macs", "Multiply-adds of jobs mined by this node's miner", registry=r)
        self.paid_macs = Counter("pouw_paid_macs", "Multiply-adds of paid-job passes (each yielded a client's C) "
                                 "mined by this node's miner", registry=r)
        self.useful_fraction = Gauge("pouw_useful_fraction", "pouw_paid_macs_total / pouw_mined_macs_total of this "
                                     "node's miner (0 before any)", registry=r)
        # the economy (docs/economy.md): the current velocity window's market activity
        self.velocity = Gauge("pouw_token_velocity", "Market token volume over average token supply, current "
                              "velocity window", registry=r)
        self.market_volume = Gauge("pouw_market_volume_tokens", "Tokens traded on the order books, current "
                                   "velocity window (base units)", registry=r)
        self.market_trades = Gauge("pouw_market_trades", "Fills on the order books, current velocity window",
                                   registry=r)

    def update(self) -> None:
        n = self.node
        self.height.set(n.chain.height)
        self.peers.set(len(n.p2p.ready_peers))
        self.mempool_txs.set(len(n.mempool))
        self.mempool_bytes.set(n.mempool.bytes)

    def render(self) -> bytes:
        from chain.difficulty import block_work
        from chain.validation import expected_target
        n = self.node
        self.update()
        self.work_rate.set(n.work_rate())
        self.difficulty.set(block_work(expected_target(n.cfg, n.chain.next_parent_info())))
        self.sync_rate.set(n.sync.progress()["blocks_per_s"])
        self.useful_fraction.set(n.miner.useful_work()[2] if n.miner else 0.0)
        from node.economy_api import velocity
        w = velocity(n.chain, 1)[0]
        self.velocity.set(w["velocity"])
        self.market_volume.set(w["volume"])
        self.market_trades.set(w["trades"])
        return generate_latest(self.registry)

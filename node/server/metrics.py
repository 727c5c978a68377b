"""Prometheus metrics of one node (own registry, so several nodes can share a process in tests).

Families (names as scraped; counters end in `_total`): chain (`pouw_chain_*`, `pouw_blocks_*`, `pouw_reorgs`),
peers (`pouw_peers*`, `pouw_peer_*`), mempool (`pouw_mempool_*`), mining (`pouw_work_rate_*`, `pouw_*_macs`,
`pouw_tickets_drawn`, `pouw_blocks_mined`, `pouw_device_faults`), jobs (`pouw_jobs{status}`, `pouw_jobs_*`,
read from the chain state at the tip), the economy (node.server.econstats), and the process/guard collectors node.py registers.
`promtool check metrics` accepts the exposition (tests/test_observability.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from chain.jobs import SLASHED, STATUS_NAMES, JobRecord

if TYPE_CHECKING:
    from chain.block import Block
    from chain.chainstate import ChainState
    from node.server.interfaces import MetricsHost


def job_transitions(cs: ChainState, block: Block) -> list[tuple[bytes, JobRecord | None, JobRecord]]:
    """(job_id, record before or None, record now) of every job `block` changed, just after it connected:
    read from the block's undo data (which lists exactly those jobs) and the tip's records."""
    from chain import schema as S
    from chain.undo import Undo

    raw = cs.store.get(S.undo_key(block.hash))
    if raw is None:
        return []
    out = []
    for jid, before in Undo.decode(raw).jobs:
        now = cs.get_job(jid)
        if now is not None and (before is None or before.status != now.status):
            out.append((jid, before, now))
    return out


def job_totals(jobs: dict[bytes, JobRecord]) -> dict:
    """Counts by status, jobs ever disputed (challenged, whatever came after), fees paid to miners (released
    jobs' fees), tokens in escrow and in bonds now."""
    by = dict.fromkeys(STATUS_NAMES, 0)
    disputed = fees = escrow = bonds = 0
    for r in jobs.values():
        by[r.status_name] += 1
        disputed += bool(r.challenge_height) or r.status == SLASHED
        fees += r.fee if r.status_name == "released" else 0
        escrow += r.escrow
        bonds += r.bond_held
    return {"by_status": by, "disputed": disputed, "fees_paid": fees, "escrow": escrow, "bonds": bonds}


class Metrics:
    def __init__(self, node: MetricsHost):
        self.node = node
        r = self.registry = CollectorRegistry()
        self.height = Gauge("pouw_chain_height", "Height of the active chain", registry=r)
        self.tip_time = Gauge(
            "pouw_chain_tip_timestamp_seconds", "Header timestamp of the tip block (Unix)", registry=r
        )
        self.headers = Gauge("pouw_chain_headers", "Height of the best known header (sync target)", registry=r)
        self.blocks_disconnected = Counter(
            "pouw_blocks_disconnected", "Blocks disconnected from the active chain", registry=r
        )
        self.reorgs = Counter("pouw_reorgs", "Reorganisations (imports that disconnected blocks)", registry=r)
        self.peers_dir = Gauge("pouw_peers_by_direction", "Connected peers by direction", ["direction"], registry=r)
        self.peer_bans = Counter("pouw_peer_bans", "Peers banned for misbehaviour", registry=r)
        self.tickets = Counter(
            "pouw_tickets_drawn", "Lottery tickets drawn by this node's miner (one per tile of every pass)", registry=r
        )
        self.blocks_mined = Counter("pouw_blocks_mined", "Blocks found by this node's miner and connected", registry=r)
        self.jobs = Gauge("pouw_jobs", "Paid jobs on chain at the tip by status", ["status"], registry=r)
        self.jobs_open = Gauge("pouw_jobs_open", "Live paid jobs (open, claimed, resulted or challenged)", registry=r)
        self.jobs_settled = Gauge(
            "pouw_jobs_settled", "Closed paid jobs (released, refunded, slashed or cancelled)", registry=r
        )
        self.jobs_disputed = Gauge("pouw_jobs_disputed", "Paid jobs ever challenged by their client", registry=r)
        self.job_fees = Gauge(
            "pouw_jobs_fees_paid_tokens", "Fees paid to miners by released jobs (base units)", registry=r
        )
        self.job_escrow = Gauge("pouw_jobs_escrow_tokens", "Fees held in escrow by live jobs (base units)", registry=r)
        self.job_bonds = Gauge("pouw_jobs_bonds_tokens", "Miner bonds held by claimed jobs (base units)", registry=r)
        self._jobs_at: bytes | None = None
        self.peers = Gauge("pouw_peers", "Connected (authenticated) peers", registry=r)
        self.mempool_txs = Gauge("pouw_mempool_transactions", "Transactions in the mempool", registry=r)
        self.mempool_bytes = Gauge("pouw_mempool_bytes", "Bytes of transactions in the mempool", registry=r)
        self.work_rate = Gauge(
            "pouw_work_rate_macs_per_second",
            "Multiply-adds of mined jobs per second (node miner + remote workers, 60 s window)",
            registry=r,
        )
        self.difficulty = Gauge(
            "pouw_difficulty_macs", "Expected multiply-adds per block at the next target", registry=r
        )
        self.sync_rate = Gauge("pouw_sync_blocks_per_second", "Blocks connected per second (15 s window)", registry=r)
        self.blocks_connected = Counter("pouw_blocks_connected", "Blocks connected to the active chain", registry=r)
        self.blocks_rejected = Counter("pouw_blocks_rejected", "Blocks rejected as invalid", registry=r)
        self.misbehaviour = Counter("pouw_peer_misbehaviour", "Misbehaviour events of peers", registry=r)
        self.device_faults = Counter("pouw_device_faults", "Compute device faults in the miner", registry=r)
        self.mined_macs = Counter("pouw_mined_macs", "Multiply-adds of jobs mined by this node's miner", registry=r)
        self.paid_macs = Counter(
            "pouw_paid_macs",
            "Multiply-adds of paid-job passes (each yielded a client's C) mined by this node's miner",
            registry=r,
        )
        self.useful_fraction = Gauge(
            "pouw_useful_fraction",
            "pouw_paid_macs_total / pouw_mined_macs_total of this node's miner (0 before any)",
            registry=r,
        )
        # the economy (docs/economy.md): the current velocity window's market activity
        self.velocity = Gauge(
            "pouw_token_velocity", "Market token volume over average token supply, current velocity window", registry=r
        )
        self.market_volume = Gauge(
            "pouw_market_volume_tokens",
            "Tokens traded on the order books, current velocity window (base units)",
            registry=r,
        )
        self.market_trades = Gauge(
            "pouw_market_trades", "Fills on the order books, current velocity window", registry=r
        )

    def update(self) -> None:
        n = self.node
        self.height.set(n.chain.height)
        ready = n.p2p.ready_peers
        self.peers.set(len(ready))
        out = sum(1 for p in ready if not p.inbound)
        self.peers_dir.labels("outbound").set(out)
        self.peers_dir.labels("inbound").set(len(ready) - out)
        self.mempool_txs.set(len(n.mempool))
        self.mempool_bytes.set(n.mempool.bytes)

    def render(self) -> bytes:
        from chain.difficulty import block_work
        from chain.validation import expected_target

        n = self.node
        self.update()
        tip = n.chain.tip
        self.tip_time.set(tip.timestamp)
        best = n.sync.best_header
        self.headers.set(max(tip.height, best.height if best is not None else 0))
        if self._jobs_at != tip.hash:  # the job gauges change only with the tip
            t = job_totals(n.chain.jobs())
            for name, c in t["by_status"].items():
                self.jobs.labels(name).set(c)
            self.jobs_open.set(sum(t["by_status"][s] for s in ("open", "claimed", "resulted", "challenged")))
            self.jobs_settled.set(sum(t["by_status"][s] for s in ("released", "refunded", "slashed", "cancelled")))
            self.jobs_disputed.set(t["disputed"])
            self.job_fees.set(t["fees_paid"])
            self.job_escrow.set(t["escrow"])
            self.job_bonds.set(t["bonds"])
            self._jobs_at = tip.hash
        self.work_rate.set(n.work_rate())
        self.difficulty.set(block_work(expected_target(n.cfg, n.chain.next_parent_info())))
        self.sync_rate.set(n.sync.progress()["blocks_per_s"])
        self.useful_fraction.set(n.miner.useful_work()[2] if n.miner else 0.0)
        from node.server.econstats import velocity

        w = velocity(n.chain, 1)[0]
        self.velocity.set(w["velocity"])
        self.market_volume.set(w["volume"])
        self.market_trades.set(w["trades"])
        return generate_latest(self.registry)

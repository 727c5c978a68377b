"""Layered block validation, cheapest first. Each layer raises a ValidationError with a stable reason.

1. ``check_header_proof``  — version, chain id, target range, job shape, the useful-work proof
   (``bad-pow-*`` reasons come from pouw).
2. ``check_block_sanity``  — no context: size/count limits, transaction root, duplicates, each
   transaction well formed and signed for this chain.
3. ``check_header_context`` — needs the parent: parent known and valid, height, ASERT target,
   median-time-past, future drift (``time-too-new`` is retry_later, never the peer's fault).
4. State — ``chain.state.apply_block`` (nonces, balances), then the state root.

``chain.transition.validate_and_apply`` runs them, tagging a rejection with its layer; every block
pipeline calls it rather than a layer (the parent's existence and validity are the caller's lookup).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chain.block import Block, Header, tx_root
from chain.config import ChainConfig
from chain.difficulty import asert_target, median_time_past
from chain.errors import BlockError, TxError
from chain.tx import check_tx

if TYPE_CHECKING:  # annotations only: pouw's verifier is imported where a proof is checked
    from pouw.params import PowParams


@dataclass(frozen=True)
class ParentInfo:
    """What context validation needs to know about the parent and its ancestors."""

    hash: bytes
    height: int
    timestamp: int
    recent_timestamps: tuple[int, ...]  # up to mtp_window timestamps ending with the parent's


def check_job_shape(cfg: ChainConfig, m: int, k: int, n: int, params: PowParams | None = None) -> None:
    """The job shapes a block may carry (also what a miner checks its filler shape against)."""
    if k < cfg.pow.min_k or max(m, k, n) > cfg.pow.max_dim:
        raise BlockError("bad-job-shape", f"job shape {m}x{k}x{n} outside limits")
    if m * k * n < cfg.pow.min_job_macs:
        raise BlockError("bad-job-size", f"job of {m * k * n} MACs < {cfg.pow.min_job_macs}")
    from pouw.errors import JobError

    try:
        (params or cfg.pow.params()).check_shape(m, k, n)
    except JobError as e:
        raise BlockError("bad-job-shape", str(e)) from e


def check_header_proof(h: Header, cfg: ChainConfig, params: PowParams | None = None) -> None:
    if h.version != cfg.version:
        raise BlockError("bad-version", f"version {h.version} != {cfg.version}")
    if h.chain_id != cfg.chain_id:
        raise BlockError("bad-chainid", f"chain id {h.chain_id} != {cfg.chain_id}")
    if not 1 <= h.target <= cfg.pow_limit:
        raise BlockError("bad-target-range", "target is zero or above the pow limit")
    if len(h.encoded) > cfg.max_header_bytes:
        raise BlockError("bad-header-length", f"{len(h.encoded)} bytes > {cfg.max_header_bytes}")
    job = h.job
    params = params or cfg.pow.params()
    check_job_shape(cfg, job.m, job.k, job.n, params)
    from pouw.errors import PowError
    from pouw.proof import TileProof
    from pouw.verify import verify_proof

    try:
        proof = TileProof.decode(h.proof)
        verify_proof(h.template, job, proof, h.target, params)
    except PowError as e:
        raise BlockError(e.reason, e.detail) from e


def check_block_sanity(block: Block, cfg: ChainConfig, *, check_sigs: bool = True) -> None:
    """Context-free checks of the body against the header. ``bad-txnmrklroot`` means the body may be
    a mutation of a valid block (do not mark the header invalid); anything after it is real."""
    txs = block.txs
    if len(txs) > cfg.max_block_txs or len(block.encoded) > cfg.max_block_bytes:
        raise BlockError("bad-blk-length", f"{len(txs)} txs, {len(block.encoded)} bytes")
    if tx_root(list(txs)) != block.header.tx_root:
        raise BlockError("bad-txnmrklroot", "transaction root mismatch")
    if len({t.txid for t in txs}) != len(txs):
        raise BlockError("bad-txns-duplicate", "duplicate transaction")
    for t in txs:
        try:
            check_tx(t, cfg.chain_id, cfg.max_tx_bytes, check_sig=check_sigs)
        except TxError as e:
            raise BlockError(e.reason, f"tx {t.txid.hex()[:16]}: {e.detail}") from e


def expected_target(cfg: ChainConfig, parent: ParentInfo) -> int:
    """ASERT target of the block after `parent`, anchored at genesis (whose timestamp the config fixes and
    which is dated at the network's launch): block 1 has the initial target, and no miner's timestamp is
    an anchor. Timestamps are bounded above by the future-drift rule, so a miner can make the chain look
    at most `max_future_drift` seconds later than it really is; dating blocks earlier only makes it harder."""
    return asert_target(
        cfg.initial_target,
        parent.timestamp - cfg.genesis_timestamp,
        parent.height,
        cfg.target_block_time,
        cfg.asert_half_life,
        cfg.pow_limit,
    )


def check_header_context(h: Header, parent: ParentInfo, cfg: ChainConfig, now: int) -> None:
    if h.prev_hash != parent.hash:
        raise BlockError("bad-prevblk", "parent mismatch")
    if h.height != parent.height + 1:
        raise BlockError("bad-height", f"height {h.height} != {parent.height + 1}")
    if h.target != expected_target(cfg, parent):
        raise BlockError("bad-diffbits", "incorrect target")
    if h.timestamp <= median_time_past(list(parent.recent_timestamps)):
        raise BlockError("time-too-old", "timestamp not above median time past")
    if h.timestamp > now + cfg.max_future_drift:
        raise BlockError(
            "time-too-new", f"timestamp {h.timestamp - now}s in the future", punish=False, retry_later=True
        )

"""The block state transition, written once as a pure function (in the style of the consensus-specs pyspec):

    validate_and_apply(block, parent, pre, cfg, now) -> BlockDiff

runs the layers of chain/validation.py in order (header proof, sanity, context, then the state with its
root) and returns the change the block makes. It reads `pre` and mutates nothing; a rejection raises a
ValidationError with its stable reason. What depends on storage stays with the caller: whether the parent
is known (`prev-blk-not-found`) or invalid (`bad-prevblk`), and what a failure does to the block index.

Callers: ChainState (its state layer is `apply_state`; its parent context is `parent_info`), `pouw verify`
(chain/maintenance.py), the test chain builder's parent context, and tests/test_chain_transition.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from chain.block import Block
from chain.config import ChainConfig
from chain.errors import BlockError
from chain.jobs import JobSource
from chain.state import Account, BlockDiff, Supply, apply_block
from chain.validation import ParentInfo, check_block_sanity, check_header_context, check_header_proof

# hash -> (height, timestamp, prev_hash) of a known block: a block index, a dict of headers, ...
Lookup = Callable[[bytes], tuple[int, int, bytes]]


@dataclass(frozen=True)
class PreState:
    """The state after the parent, as the state layer reads it: accounts, the supply record (minted, burned,
    LtHash) and the job source (records, schedule, block hashes by height)."""

    get: Callable[[bytes], Account]
    supply: Supply
    jobs: JobSource | None = None


def parent_info(h: bytes, lookup: Lookup, window: int) -> ParentInfo:
    """The context a child of block `h` is validated in: h's height and timestamp and the timestamps of up to
    `window` blocks ending with h's, oldest first (fewer near genesis, genesis included). Built here only."""
    height, timestamp, prev = lookup(h)
    ts = [timestamp]
    x_height, x_prev = height, prev
    while x_height > 0 and len(ts) < window:
        x_height, x_ts, x_prev = lookup(x_prev)
        ts.append(x_ts)
    return ParentInfo(h, height, timestamp, tuple(reversed(ts)))


def apply_state(block: Block, pre: PreState, cfg: ChainConfig) -> BlockDiff:
    """Layer 4: the block's transactions, the subsidy and fees to its miner, and the job schedule of its
    height, applied to `pre` (TxError reasons such as `bad-txn-nonce`); then `bad-state-root` unless the
    resulting root is the header's."""
    h = block.header
    diff = apply_block(pre.get, pre.supply, block.txs, h.miner, cfg.subsidy(h.height), height=h.height, cfg=cfg,
                       jobs=pre.jobs)
    if diff.state_root != h.state_root:
        raise BlockError("bad-state-root", "state root mismatch")
    return diff


def validate_and_apply(block: Block, parent: ParentInfo, pre: PreState, cfg: ChainConfig, now: int, *,
                       params=None, check_proof: bool = True, check_sigs: bool = True) -> BlockDiff:
    """Every consensus check of `block` as the child of `parent` whose state is `pre`, cheapest first, and the
    change it makes. `now` is the validating clock (future drift); `check_proof`/`check_sigs` off only for
    data already checked once (`pouw verify --no-proofs`)."""
    if check_proof:
        check_header_proof(block.header, cfg, params)
    check_block_sanity(block, cfg, check_sigs=check_sigs)
    check_header_context(block.header, parent, cfg, now)
    return apply_state(block, pre, cfg)

"""The block state transition, written once as a pure function (in the style of the consensus-specs pyspec):

    validate_and_apply(block, parent, pre, cfg, now) -> BlockDiff

runs the layers of chain/validation.py in order (header proof, sanity, context, then the state with its
root) and returns the change the block makes. It reads `pre` and mutates nothing; a rejection raises a
ValidationError with its stable reason and the `layer` that raised it. What depends on storage stays with
the caller: whether the parent is known (`prev-blk-not-found`) or invalid (`bad-prevblk`), raised by the
parent lookup it may pass in, and what a failure does to the block index (decided from `layer`).

Every block pipeline calls it and no caller runs a layer itself: ChainState's import (submit_block,
submit_header) and connect, reindex and `pouw verify` (chain/maintenance.py), and the test chain builder's
control state (chain/synthetic.py). The parent context is built by `parent_info` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection

from chain.block import Block, Header
from chain.config import ChainConfig
from chain.errors import BlockError, ValidationError
from chain.jobs import JobSource
from chain.state import Account, BlockDiff, Supply, apply_block
from chain.validation import ParentInfo, check_block_sanity, check_header_context, check_header_proof

if TYPE_CHECKING:  # annotations only: pouw's verifier is imported where a proof is checked
    from pouw.params import PowParams

# The layers, cheapest first; a rejection carries the one that raised it in `ValidationError.layer`.
PROOF, SANITY, CONTEXT, STATE = "proof", "sanity", "context", "state"
LAYERS = (PROOF, SANITY, CONTEXT, STATE)
# Sanity reasons that may mean a mutated body of a valid header (Bitcoin's CVE-2012-2459 lesson): the header
# must not be recorded invalid for them on import, as another body may still complete it.
MUTATION_REASONS = frozenset({"bad-txnmrklroot", "bad-blk-length"})

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
    diff = apply_block(
        pre.get, pre.supply, block.txs, h.miner, cfg.subsidy(h.height), height=h.height, cfg=cfg, jobs=pre.jobs
    )
    if diff.state_root != h.state_root:
        raise BlockError("bad-state-root", "state root mismatch")
    return diff


def validate_and_apply(
    block: Block | Header,
    parent: ParentInfo | Callable[[], ParentInfo] | None,
    pre: PreState | None,
    cfg: ChainConfig,
    now: int,
    *,
    params: PowParams | None = None,
    layers: Collection[str] = LAYERS,
    check_sigs: bool = True,
) -> BlockDiff | None:
    """Every consensus check of `block` as the child of `parent` whose state is `pre`, cheapest first, and the
    change it makes. `now` is the validating clock (future drift). A rejection is a ValidationError whose
    `layer` names the layer that raised it (PROOF, SANITY, CONTEXT or STATE): callers record what a failure
    means for their index from that (a header known invalid, a body that may be a mutation, a block whose
    transactions failed), never by running the layers themselves.

    For callers holding less than a whole block in context:
    - `block` a Header (headers-first): the header layers only (proof, context); returns None.
    - `parent` a function: called once the context-free layers pass, so the storage reasons it raises
      (`prev-blk-not-found`, `bad-prevblk`) come after `bad-pow-*` and sanity, as on import; tagged CONTEXT.
    - `pre` None: the state layer waits (a side-chain block: its parent's state is not at hand); returns None.
    - `layers`: the layers to run; leave out only what this block already passed (a stored block connected
      later runs STATE alone) or what the caller trusts (`pouw verify --no-proofs`, with `check_sigs` off).
    """
    layer = PROOF
    try:
        if PROOF in layers:
            check_header_proof(block.header if isinstance(block, Block) else block, cfg, params)
        layer = SANITY
        if SANITY in layers and isinstance(block, Block):
            check_block_sanity(block, cfg, check_sigs=check_sigs)
        layer = CONTEXT
        if CONTEXT in layers:
            assert parent is not None, "the context layer needs the parent"
            pinfo = parent if isinstance(parent, ParentInfo) else parent()
            check_header_context(block.header if isinstance(block, Block) else block, pinfo, cfg, now)
        layer = STATE
        if STATE not in layers or pre is None or not isinstance(block, Block):
            return None
        return apply_state(block, pre, cfg)
    except ValidationError as err:
        err.layer = layer
        raise

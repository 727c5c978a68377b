"""Block templates and mining: the one place the chain calls the useful-work miner.

Flow: choose transactions (skipping ones that do not apply), compute the state root; build the filler
operands once from `filler_seed(header)` (which excludes the nonce, the job, the timestamp and the
transactions) with their commitments, put the job commitment into the header; then for nonce = n0, n0+1,
...: template = header without proof (the nonce is in it, so each nonce draws new noise and new tickets),
mine; the first winning tile's proof completes the header.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable

from chain.block import NULL_JOB, Block, Header, tx_root
from chain.config import ChainConfig
from chain.difficulty import median_time_past
from chain.encoding import encode
from chain.errors import TxError
from chain.hashing import tagged_hash
from chain.state import Account, BlockDiff, StateOverlay, Supply, apply_block, job_source_of
from chain.tx import Transaction, check_tx
from chain.validation import ParentInfo, expected_target

if TYPE_CHECKING:  # annotations only: the miner (torch) is imported where a block is mined
    from chain.chainstate import ChainState
    from chain.jobs import JobSource
    from kernels.base import Backend
    from pouw.miner import PreparedJob
    from pouw.params import PowParams


@dataclass(frozen=True)
class BlockTemplate:
    """A header without job and proof, its transactions and the state change they make."""

    header: Header
    txs: tuple[Transaction, ...]
    diff: BlockDiff

    @property
    def fees(self) -> int:
        return self.diff.fees


def select_txs(
    cfg: ChainConfig,
    get: Callable[[bytes], Account],
    txs: Iterable[Transaction],
    *,
    height: int | None = None,
    jobs: JobSource | None = None,
) -> list[Transaction]:
    """Greedy in the given order: keep each tx that is well formed and applies after the kept ones.
    Job transactions are kept only with `height` (of the block being built) and a job source; `jobs`
    defaults to the owner of `get` when that is a bound method of ChainState/MemoryState."""
    jobs = jobs if jobs is not None else job_source_of(get)
    ov = StateOverlay(get, jobs, cfg, height)
    out: list[Transaction] = []
    seen: set[bytes] = set()
    size = 0
    for tx in txs:
        if len(out) >= cfg.max_block_txs or tx.txid in seen:
            continue
        if size + len(tx.encoded) + 2048 > cfg.max_block_bytes - cfg.max_header_bytes // 4:
            continue
        try:
            check_tx(tx, cfg.chain_id, cfg.max_tx_bytes, check_sig=False)
            ov.apply_tx(tx)
        except TxError:
            continue
        out.append(tx)
        seen.add(tx.txid)
        size += len(tx.encoded)
    return out


def build_template(
    cfg: ChainConfig,
    parent: ParentInfo,
    get: Callable[[bytes], Account],
    supply: Supply,
    miner: bytes,
    txs: Iterable[Transaction] = (),
    timestamp: int | None = None,
    *,
    select: bool = True,
    jobs: JobSource | None = None,
) -> BlockTemplate:
    """Template for the block after `parent`. With select=False the txs are taken as given.

    `jobs` is the job state of the parent (ChainState or MemoryState; anything with get_job/due_jobs).
    When omitted it is taken from `get` if that is a bound method of such an object (``cs.get_account``),
    so the template's state root includes the jobs scheduled at this height."""
    height = parent.height + 1
    jobs = jobs if jobs is not None else job_source_of(get)
    chosen = select_txs(cfg, get, txs, height=height, jobs=jobs) if select else list(txs)
    if timestamp is None:
        import time

        timestamp = int(time.time())
    timestamp = max(timestamp, median_time_past(list(parent.recent_timestamps)) + 1)
    diff = apply_block(get, supply, chosen, miner, cfg.subsidy(height), height=height, cfg=cfg, jobs=jobs)
    h = Header(
        cfg.version,
        cfg.chain_id,
        height,
        parent.hash,
        timestamp,
        expected_target(cfg, parent),
        tx_root(chosen),
        diff.state_root,
        miner,
        NULL_JOB,
        nonce=0,
        proof=b"",
    )
    return BlockTemplate(h, tuple(chosen), diff)


NONCE_MAX = (1 << 64) - 1


def filler_seed(header: Header) -> bytes:
    """Seed of the filler operands a miner mines for `header` when no client job waits (a miner's
    convention, not a consensus rule: validators do not check fillers). It depends on version, chain id,
    height, parent and miner only, not on the nonce, job, timestamp or transactions, so one set of operands
    and commitments serves every attempt and every template refresh at this height."""
    return tagged_hash(
        b"filler", encode([header.version, header.chain_id, header.height, header.prev_hash, header.miner])
    )


def filler_job(cfg: ChainConfig, header: Header, params: PowParams | None = None) -> PreparedJob:
    """The filler operands for `header` with their commitments (a pouw.miner.PreparedJob). Build it once
    per height and pass it to every `mine_filler_once` call."""
    from pouw.miner import filler_operands, prepare_job

    a, b = filler_operands(filler_seed(header), cfg.pow.filler_shape)
    return prepare_job(a, b, params or cfg.pow.params())


def mine_filler_once(
    cfg: ChainConfig,
    header: Header,
    params: PowParams,
    backend: Backend | None,
    nonce: int,
    prepared: PreparedJob | None = None,
    next_nonce: int | None = None,
) -> tuple[Header | None, int]:
    """One attempt: the filler job (`prepared`, else built from `filler_seed(header)`) under `nonce`;
    `header`'s job, nonce and proof fields are replaced. Returns (header with proof or None, job MACs).
    Blocking; the unit of work of every CPU/GPU miner.

    next_nonce: the nonce the caller tries next on the same header and operands. On a backend whose passes are
    pipelined (`Capabilities.async_pass`) that attempt's inputs are staged during this one (`mine_job`'s
    next_template); a later attempt under any other template discards them. Same results either way."""
    from pouw.miner import mine_job

    if not 0 <= nonce <= NONCE_MAX:
        raise ValueError(f"nonce {nonce} outside u64")
    prep = prepared if prepared is not None else filler_job(cfg, header, params)
    h = replace(header, job=prep.job, nonce=nonce, proof=b"")
    next_template = None
    if next_nonce is not None and backend is not None and backend.caps.async_pass:
        next_template = replace(h, nonce=next_nonce & NONCE_MAX).template
    res = mine_job(
        h.template,
        prep.job,
        prep.a,
        prep.b,
        h.target,
        params,
        backend,
        prepared=prep,
        recover_c=False,
        max_proofs=1,
        stage_sync=False,
        next_template=next_template,
    )
    return (h.with_proof(res.proofs[0].encode()) if res.proofs else None), prep.job.macs


def mine_header(
    cfg: ChainConfig,
    header: Header,
    *,
    params: PowParams | None = None,
    backend: Backend | None = None,
    nonce: int = 0,
    max_tries: int = 1000,
) -> Header | None:
    """Find a proof for `header` (its job, nonce and proof fields are replaced): the filler operands and
    commitments are built once, then nonces `nonce`, `nonce + 1`, ... are tried (wrapping within u64).
    None after max_tries attempts."""
    params = params or cfg.pow.params()
    prep = filler_job(cfg, header, params)
    for i in range(max_tries):
        found, _ = mine_filler_once(cfg, header, params, backend, (nonce + i) & NONCE_MAX, prepared=prep)
        if found is not None:
            return found
    return None


def mine_template(
    cfg: ChainConfig,
    tpl: BlockTemplate,
    *,
    params: PowParams | None = None,
    backend: Backend | None = None,
    nonce: int = 0,
    max_tries: int = 1000,
) -> Block | None:
    """`tpl` mined by `mine_header` (same arguments), as a block."""
    h = mine_header(cfg, tpl.header, params=params, backend=backend, nonce=nonce, max_tries=max_tries)
    return Block(h, tpl.txs) if h is not None else None


def mine_block(
    cs: ChainState,
    miner: bytes,
    txs: Iterable[Transaction] = (),
    timestamp: int | None = None,
    *,
    backend: Backend | None = None,
    max_tries: int = 10000,
) -> Block:
    """Build a template on the tip of ChainState `cs` and mine it (does not submit it)."""
    tpl = build_template(cs.cfg, cs.next_parent_info(), cs.get_account, cs.supply, miner, txs, timestamp)
    blk = mine_template(cs.cfg, tpl, params=cs.params, backend=backend, max_tries=max_tries)
    if blk is None:
        raise RuntimeError(f"no winning tile after {max_tries} attempts")
    return blk

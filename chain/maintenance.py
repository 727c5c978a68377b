"""Offline checks of a datadir: verify (re-validate everything from genesis) and reindex (rebuild
state from stored blocks). Both run with the node stopped."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from chain import indexes
from chain import schema as S
from chain.chainstate import DB_DIRNAME, ChainState, IndexEntry
from chain.config import ChainConfig
from chain.errors import BlockError, ChainError, EncodingError, StorageError, ValidationError
from chain.state import MemoryState, genesis_econ, genesis_state
from chain.store import Store
from chain.transition import CONTEXT, LAYERS, SANITY, STATE, PreState, validate_and_apply
from chain.validation import ParentInfo

FAR_FUTURE = 1 << 62


class VerifyError(ChainError):
    """The stored chain or state is inconsistent; `reason` is short and stable."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class VerifyReport:
    height: int
    tip: bytes
    accounts: int
    transactions: int
    minted: int
    jobs: int = 0


def _open_raw(datadir: str | Path, cfg: ChainConfig | None) -> tuple[Store, ChainState]:
    store = Store(Path(datadir) / DB_DIRNAME, create=False)
    try:
        cfg = ChainState._check_meta(store, cfg)
        cs = ChainState(store, cfg)
        cs._load()
    except BaseException:
        store.close()
        raise
    return store, cs


def verify_datadir(datadir: str | Path, cfg: ChainConfig | None = None, *, check_proofs: bool = True) -> VerifyReport:
    """Re-validate the active chain from genesis (proofs, sanity, context, state) and compare the
    replayed state with the stored accounts, supply, tip and undo records. Raises VerifyError or
    StorageError naming the first inconsistency."""
    store, cs = _open_raw(datadir, cfg)
    try:
        g = cs.genesis
        if store.get(S.height_key(0)) != g.hash:
            raise VerifyError("bad-genesis", "height 0 is not this chain's genesis")
        accts, supply = genesis_state(cs.cfg.genesis_alloc, cs.cfg.genesis_issuers)
        st = MemoryState(accts, supply, hashes=[g.hash], econ=genesis_econ(cs.cfg.genesis_issuers))
        prev = g.header
        ntx = 0
        want_idx = indexes.genesis_entries(cs.cfg)  # lookup indexes implied by the replay
        for height in range(1, cs.height + 1):
            h = store.get(S.height_key(height))
            if h is None:
                raise VerifyError("missing-height", f"no active block at height {height}")
            blk = cs.get_block(h)
            if blk is None:
                raise VerifyError("missing-block", f"block {h.hex()[:16]} at height {height}")
            if blk.hash != h:
                raise VerifyError("bad-block-hash", f"stored header at height {height} does not hash to {h.hex()[:16]}")
            e = cs.index[h]
            if e.failed or not e.status & S.VALID_STATE:
                raise VerifyError("bad-status", f"active block {h.hex()[:16]} has status {e.status}")
            if store.get(S.undo_key(h)) is None:
                raise VerifyError("missing-undo", f"active block {h.hex()[:16]} has no undo data")
            try:
                diff = validate_and_apply(
                    blk,
                    cs.parent_info(prev.hash),
                    PreState(st.get, st.supply, st),
                    cs.cfg,
                    FAR_FUTURE,
                    params=cs.params,
                    layers=LAYERS if check_proofs else (SANITY, CONTEXT, STATE),
                    check_sigs=check_proofs,
                )
                assert diff is not None
            except ValidationError as err:
                raise VerifyError(err.reason, f"block {h.hex()[:16]} at height {height}: {err}") from err
            st.apply(diff)
            want_idx.update(indexes.diff_entries(blk, diff, st.get))
            st.hashes.append(h)
            prev = blk.header
            ntx += len(blk.txs)
        if store.get(S.META_TIP) != prev.hash:
            raise VerifyError("bad-tip", "tip pointer does not match the active chain")
        stored = cs.accounts()
        if stored != st.accounts:
            diff_addrs = set(stored) ^ set(st.accounts) | {a for a in stored if stored[a] != st.accounts.get(a)}
            raise VerifyError("bad-accounts", f"{len(diff_addrs)} stored accounts differ from the replay")
        if cs.jobs() != st.jobs:
            raise VerifyError("bad-jobs", "stored job records differ from the replay")
        if dict(cs.scan_econ(b"")) != st.econ:
            raise VerifyError("bad-economy", "stored economy records differ from the replay")
        want_sched = sorted((r.due, j) for j, r in st.jobs.items() if r.due)
        if cs.schedule() != want_sched:
            raise VerifyError("bad-schedule", "stored job schedule differs from the replay")
        if cs.supply != st.supply:
            raise VerifyError("bad-supply", "stored supply record differs from the replay")
        if store.get(S.META_INDEXES) == indexes.MARKER and indexes.stored(store) != want_idx:
            raise VerifyError(
                "bad-indexes",
                "stored tx / address / job lookup indexes differ from the replay (pouw reindex rebuilds them)",
            )
        try:
            st.check_conservation()
        except AssertionError as e:
            raise VerifyError("bad-conservation", str(e)) from e
        return VerifyReport(cs.height, prev.hash, len(stored), ntx, st.supply.minted, len(st.jobs))
    except EncodingError as e:
        raise VerifyError("bad-encoding", str(e)) from e
    finally:
        store.close()


def reindex_datadir(datadir: str | Path, cfg: ChainConfig | None = None) -> VerifyReport:
    """Rebuild the state from stored blocks: wipe state, re-check every stored header and body through
    validate_and_apply as import does (proof, sanity, context, in that order; a child of a failed block is
    `bad-prevblk` once its own header and body pass), marking failures, then connect the best chain from
    genesis (the state layer, which marks a block whose transactions fail as import does)."""
    store, cs = _open_raw(datadir, cfg)
    try:
        accts, supply = genesis_state(cs.cfg.genesis_alloc, cs.cfg.genesis_issuers)
        g = cs.genesis
        with store.batch() as b:
            b.delete(S.META_INDEXES)  # tx / address / job indexes: rebuilt as the chain reconnects
            for prefix in (
                S.P_ACCOUNT,
                S.P_UNDO,
                S.P_HEIGHT,
                S.P_JOB,
                S.P_SCHED,
                S.P_ECON,
                S.P_TXINDEX,
                S.P_ADDRHIST,
                S.P_COMMIT,
            ):
                for k, _ in store.iterate(prefix):
                    b.delete(k)
            for a, acct in accts.items():
                b.put(S.account_key(a), acct.encode())
            for k, v in genesis_econ(cs.cfg.genesis_issuers).items():
                b.put(S.econ_key(k), v)
            b.put(S.META_SUPPLY, supply.encode())
            b.put(S.height_key(0), g.hash)
            b.put(S.META_TIP, g.hash)
            for e in cs.index.values():
                if e.hash != g.hash:
                    e.status &= ~(S.VALID_STATE | S.FAILED_MASK)
                    e.reason = ""
                    b.put(S.index_key(e.hash), e.record())
        cs.chain = [g.hash]
        failed: dict[bytes, str] = {}

        def parent(e: IndexEntry) -> ParentInfo:
            if e.prev in failed:
                raise BlockError("bad-prevblk", "parent is invalid")
            return cs.parent_info(e.prev)

        for e in sorted(cs.index.values(), key=lambda x: x.height):
            if e.height == 0:
                continue
            stored = (cs.get_block(e.hash) if e.status & S.HAVE_DATA else None) or cs.get_header(e.hash)
            if stored is None:  # ChainState's load checked every index record has its header: a disk fault since
                raise StorageError(f"database at {store.path} lost the header of block {e.hash.hex()[:16]}")
            try:  # as on import; the state layer runs when ChainState connects the best chain below
                validate_and_apply(stored, partial(parent, e), None, cs.cfg, FAR_FUTURE, params=cs.params)
            except ValidationError as err:
                failed[e.hash] = err.reason
        with store.batch() as b:
            for h, reason in failed.items():
                e = cs.index[h]
                e.status |= S.FAILED if reason != "bad-prevblk" else S.FAILED_CHILD
                e.reason = reason
                b.put(S.index_key(h), e.record())
    finally:
        store.close()
    with ChainState.open(datadir, cfg, create=False):  # connects the best chain
        pass
    return verify_datadir(datadir, cfg)

"""Secondary indexes of the active chain, for lookups (the explorer and the API): tx id -> block,
address -> history, job commitment (h_a, h_b) -> job ids. Keys and values: chain/schema.py.

Invariants:
- The entries describe exactly the active chain: `write_connect` / `write_disconnect` add to the batch
  that connects / disconnects a block (chain/chainstate.py), so they move with the tip atomically.
- An address has one history entry per active block that changed its account or that names it in a
  transaction (sender or an address field of the payload): balance before and after, nonce after,
  the ids of the block's transactions that name it. Genesis allocations are entries at height 0.
- `ensure` builds them once for a datadir made before they existed (no ``m/indexes`` marker), from
  the stored blocks and undo data; `pouw reindex` wipes and rebuilds them with the state.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Callable, Iterator

from chain import schema as S
from chain.block import Block
from chain.encoding import as_bytes, as_int, as_list, decode, encode
from chain.jobs import JobRecord
from chain.keys import ADDRESS_LEN
from chain.state import EMPTY, Account, BlockDiff, genesis_state
from chain.store import Batch, Store
from chain.tx import Transaction
from chain.undo import Undo
from kernels.logevent import event

if TYPE_CHECKING:
    from chain.chainstate import ChainState
    from chain.config import ChainConfig

log = logging.getLogger("pouw.chain")
MARKER = encode(S.INDEXES_VERSION)
PREFIXES = (S.P_TXINDEX, S.P_ADDRHIST, S.P_COMMIT)


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    height: int
    balance_before: int
    balance_after: int
    nonce: int
    txids: tuple[bytes, ...]

    def encode(self) -> bytes:
        return encode([self.balance_before, self.balance_after, self.nonce, list(self.txids)])

    @classmethod
    def decode(cls, height: int, raw: bytes) -> "HistoryEntry":
        f = as_list(decode(raw), 4, what="history entry")
        return cls(
            height,
            as_int(f[0], 0, 1 << 64, what="balance"),
            as_int(f[1], 0, 1 << 64, what="balance"),
            as_int(f[2], 0, 1 << 64, what="nonce"),
            tuple(as_bytes(t, 32, what="txid") for t in as_list(f[3], what="txids")),
        )


def tx_addresses(tx: Transaction) -> set[bytes]:
    """The addresses a transaction names: its sender and every address field of its payload."""
    out = {tx.sender}
    p = tx.payload
    if dataclasses.is_dataclass(p):
        for f in dataclasses.fields(p):
            v = getattr(p, f.name)
            if isinstance(v, bytes) and len(v) == ADDRESS_LEN:
                out.add(v)
    return out


def _named(block: Block) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for t in block.txs:
        for a in tx_addresses(t):
            out.setdefault(a, []).append(t.txid)
    return out


def block_entries(
    block: Block, before: dict[bytes, Account], after: Callable[[bytes], Account], new_jobs: dict[bytes, JobRecord]
) -> dict[bytes, bytes]:
    """The index entries of one active block (`before`: the accounts it changed, as they were before;
    `after`: any account after it; `new_jobs`: the jobs it created)."""
    out: dict[bytes, bytes] = {}
    named = _named(block)
    for t in block.txs:
        out[S.txindex_key(t.txid)] = block.hash
    for a in sorted(set(before) | set(named)):
        acct = after(a)
        old = before.get(a, acct)
        out[S.addrhist_key(a, block.height)] = HistoryEntry(
            block.height, old.balance, acct.balance, acct.nonce, tuple(named.get(a, ()))
        ).encode()
    for j, rec in new_jobs.items():
        out[S.commit_key(rec.h_a, rec.h_b) + j] = b""
    return out


def diff_entries(block: Block, diff: BlockDiff, get: Callable[[bytes], Account]) -> dict[bytes, bytes]:
    """`block_entries` of a block connected by `diff` (`get`: accounts after it)."""
    new_jobs = {j: diff.jobs_after[j] for j, old in diff.jobs_before.items() if old is None and j in diff.jobs_after}
    return block_entries(block, diff.before, lambda a: diff.after[a] if a in diff.after else get(a), new_jobs)


def genesis_entries(cfg: ChainConfig) -> dict[bytes, bytes]:
    """Genesis allocations: history entries at height 0."""
    accts, _ = genesis_state(cfg.genesis_alloc, cfg.genesis_issuers)
    return {
        S.addrhist_key(a, 0): HistoryEntry(0, 0, acct.balance, acct.nonce, ()).encode()
        for a, acct in sorted(accts.items())
    }


def _put_all(b: Batch, entries: dict[bytes, bytes]) -> None:
    for k, v in entries.items():
        b.put(k, v)


def write_connect(b: Batch, block: Block, diff: BlockDiff) -> None:
    """Add the entries of `block`, connected by `diff`, to the batch that connects it."""
    _put_all(b, diff_entries(block, diff, lambda a: _account(b.get(S.account_key(a)))))


def write_disconnect(b: Batch, block: Block, undo: Undo, get_job: Callable[[bytes], JobRecord | None]) -> None:
    """Remove the entries of `block` in the batch that disconnects it (`get_job`: records at the tip
    before the disconnect)."""
    for t in block.txs:
        b.delete(S.txindex_key(t.txid))
    for a in {a for a, _ in undo.accounts} | set(_named(block)):
        b.delete(S.addrhist_key(a, block.height))
    for j, old in undo.jobs:
        rec = get_job(j) if old is None else None
        if rec is not None:
            b.delete(S.commit_key(rec.h_a, rec.h_b) + j)


def _account(raw: bytes | None) -> Account:
    return Account.decode(raw) if raw is not None else EMPTY


def ensure(cs: "ChainState") -> bool:
    """Build the indexes of the active chain unless the marker says they are complete. True if built."""
    if cs.store.get(S.META_INDEXES) == MARKER:
        return False
    rebuild(cs)
    return True


def rebuild(cs: "ChainState", batch_blocks: int = 500) -> None:
    """Wipe and rebuild every index entry from the stored active chain (blocks and undo data), walking
    from the tip down so each block's accounts-after are known without replaying state."""
    store = cs.store
    if cs.height > 0:
        event(log, logging.INFO, "building the tx / address / job indexes", blocks=cs.height)
    with store.batch() as b:
        b.delete(S.META_INDEXES)
        for p in PREFIXES:
            for k, _ in store.iterate(p):
                b.delete(k)
    cur: dict[bytes, Account] = {}  # account after the block being indexed (below: before the next)
    todo = list(cs.chain[1:])
    while todo:
        with store.batch() as b:
            for h in reversed(todo[-batch_blocks:]):
                block = cs.get_block(h)
                raw = store.get(S.undo_key(h))
                if block is None or raw is None:
                    from chain.errors import StorageError

                    raise StorageError(f"active block {h.hex()[:16]}: body or undo data missing")
                undo = Undo.decode(raw, f"undo data of block {h.hex()[:16]}")
                before = dict(undo.accounts)
                snap = {a: cur[a] if a in cur else cs.get_account(a) for a in set(before) | set(_named(block))}
                new_jobs = {j: r for j, old in undo.jobs if old is None and (r := cs.get_job(j)) is not None}
                _put_all(b, block_entries(block, before, snap.__getitem__, new_jobs))
                for a, acct in before.items():
                    cur[a] = acct
        del todo[-batch_blocks:]
    with store.batch() as b:
        _put_all(b, genesis_entries(cs.cfg))
        b.put(S.META_INDEXES, MARKER)


# --- lookups ------------------------------------------------------------------------------------------
def stored(store: Store) -> dict[bytes, bytes]:
    """Every stored index entry (for `pouw verify`)."""
    return {k: v for p in PREFIXES for k, v in store.iterate(p)}


def tx_block(store: Store, txid: bytes) -> bytes | None:
    """The active-chain block that holds `txid`, or None."""
    return store.get(S.txindex_key(txid))


def history(store: Store, addr: bytes, before: int | None = None) -> Iterator[HistoryEntry]:
    """An address's history entries, newest first (below height `before` when given)."""
    pre = S.addrhist_prefix(addr)
    start = S.addrhist_key(addr, before - 1) if before is not None and before > 0 else None
    if before is not None and before <= 0:
        return
    for k, v in store.iterate(pre, start=start):
        yield HistoryEntry.decode(S.addrhist_height(k), v)


def jobs_with_operands(store: Store, h_a: bytes, h_b: bytes) -> list[bytes]:
    """Ids of the active chain's jobs whose operand commitments are (h_a, h_b)."""
    pre = S.commit_key(h_a, h_b)
    return [k[len(pre) :] for k, _ in store.iterate(pre)]


class TxIndex:
    """`txid in idx` / `idx.get(txid)` over the persisted tx index (the node's former in-memory map)."""

    def __init__(self, store_of: Callable[[], Store]):
        self._store_of = store_of

    def get(self, txid: bytes) -> bytes | None:
        return tx_block(self._store_of(), txid)

    def __contains__(self, txid: bytes) -> bool:
        return self.get(txid) is not None

"""Account state, the state commitment, and the state transition as short pure functions.

- An account is ``(balance, nonce)``; the all-zero account is "absent" and is not committed.
- State commitment: an LtHash (lattice homomorphic multiset hash, 1024 lanes of uint16, lane i = bytes
  2i, 2i+1 little-endian) over the leaves ``lt_leaf("acct", address, encode([balance, nonce]))`` of every
  present account, updated in O(1) per touched account. ``state_root = H("state", encode([minted, burned,
  lthash]))`` (H, XOF: chain/hashing.py; a leaf is XOF(tag, parts, 2048 bytes) read as 1024 u16 LE).
- Job records (chain/jobs.py) join the same LtHash as leaves ``lt_leaf("job", job_id, record)``;
  a record's ``due`` field is the schedule, so the state root commits to jobs and schedule. A chain
  without jobs has exactly the roots it had before jobs existed.
- Economy records (chain/economy.py, chain/market.py: issuers, grants, balances by kind, orders, the
  economy schedule) join the same LtHash as leaves (below);
  a chain without economy transactions or genesis issuers has the roots it had before the economy.
  (The leaf is ``lt_leaf("econ", u8(len(key)), key, value)``; keys are shorter than 256 bytes.)
- Conservation: Σ balances + Σ escrow + Σ bonds + the economy's token buckets == minted − burned
  (escrow and bonds are held by live job records); each issuer's credits are conserved on their own.
  `Supply` tracks minted and burned.
- Transition: ``apply_block(get, supply, txs, miner, subsidy, height=, cfg=, jobs=) -> BlockDiff`` never
  mutates anything; it raises TxError(reason) on the first failing transaction. Order: transactions,
  then subsidy + fees to the miner, then the jobs scheduled at this height (release / refund).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from chain.encoding import U64_MAX, as_bytes, as_int, as_list, cached_encoding, decode, encode, encode_record
from chain.errors import TxError
from chain.hashing import tagged_hash, xof
from chain.jobs import RELEASED, JobRecord, JobSource, due_effects, job_tx_effects
from chain.tx import JOB_KINDS, KIND_JOB_SUBMIT, KIND_TRANSFER, JobResult, Transaction
from chain import economy
from chain.econtx import ECON_KINDS
from chain.economy import EconSource

if TYPE_CHECKING:
    from chain.config import ChainConfig, GenesisIssuer

LANES = 1024
LT_BYTES = LANES * 2


@dataclass(frozen=True)
class Account:
    balance: int = 0
    nonce: int = 0

    @property
    def empty(self) -> bool:
        return self.balance == 0 and self.nonce == 0

    def encode(self) -> bytes:
        return cached_encoding(self, lambda: encode_record([self.balance, self.nonce]))

    @classmethod
    def decode(cls, data: bytes) -> "Account":
        f = as_list(decode(data, max_bytes=64, max_array=2), 2, what="account")
        return cls(as_int(f[0], what="balance"), as_int(f[1], what="nonce"))


EMPTY = Account()
Getter = Callable[[bytes], Account]


_LEAVES: OrderedDict[tuple[bytes, ...], np.ndarray] = (
    OrderedDict()
)  # recent leaves by input: a record added in one block is subtracted later
LEAVES_KEPT = 1 << 15  # 64 MiB of leaves; the oldest goes first


def lt_leaf(tag: bytes, *parts: bytes, keep: bool = True) -> np.ndarray:
    """An LtHash leaf: XOF(tag, parts, 2048 bytes) as 1024 little-endian uint16 lanes (read-only). The
    last LEAVES_KEPT leaves computed with ``keep`` are kept: the leaf of a value added to the state now is
    needed again when that value is replaced (the leaf of a value being removed, ``keep=False``, is not)."""
    key = (tag, *parts)
    v = _LEAVES.get(key)
    if v is None:
        v = np.frombuffer(xof(tag, *parts, length=LT_BYTES), dtype="<u2")
        if keep:
            if len(_LEAVES) >= LEAVES_KEPT:
                _LEAVES.popitem(last=False)
            _LEAVES[key] = v
    return v


def clear_leaf_cache() -> None:
    """Forget every kept leaf (benchmarks: time a cold import)."""
    _LEAVES.clear()


def leaf_vector(address: bytes, acct: Account, keep: bool = True) -> np.ndarray:
    return lt_leaf(b"acct", address, acct.encode(), keep=keep)


def job_leaf_vector(job_id: bytes, rec: JobRecord, keep: bool = True) -> np.ndarray:
    return lt_leaf(b"job", job_id, rec.encode(), keep=keep)


def econ_leaf_vector(key: bytes, value: bytes, keep: bool = True) -> np.ndarray:
    """Leaf of an economy record: lt_leaf("econ", u8(len(key)), key, value) (every key is < 256 bytes)."""
    return lt_leaf(b"econ", bytes([len(key)]), key, value, keep=keep)


EconChanges = Iterable[tuple[bytes, "bytes | None", "bytes | None"]]


@dataclass(frozen=True)
class Supply:
    """Minted, burned and the LtHash accumulator of all present accounts."""

    minted: int
    burned: int
    lthash: bytes  # LT_BYTES

    @classmethod
    def zero(cls) -> "Supply":
        return cls(0, 0, bytes(LT_BYTES))

    def encode(self) -> bytes:
        return encode([self.minted, self.burned, self.lthash])

    @classmethod
    def decode(cls, data: bytes) -> "Supply":
        f = as_list(decode(data, max_bytes=LT_BYTES + 64, max_array=3), 3, what="supply")
        return cls(as_int(f[0], what="minted"), as_int(f[1], what="burned"), as_bytes(f[2], LT_BYTES, what="lthash"))

    @property
    def root(self) -> bytes:
        return tagged_hash(b"state", self.encode())

    def updated(
        self,
        changes: Iterable[tuple[bytes, Account, Account]],
        minted: int = 0,
        burned: int = 0,
        jobs: Iterable[tuple[bytes, JobRecord | None, JobRecord | None]] = (),
        econ: EconChanges = (),
    ) -> "Supply":
        """Supply after replacing, for each (address, old, new), the old account by the new one (and,
        for each (job_id, old, new), the old job record by the new one; None = absent)."""
        acc = np.frombuffer(self.lthash, dtype="<u2").copy()
        for addr, old, new in changes:
            if old == new:
                continue
            if not old.empty:
                acc -= leaf_vector(addr, old, False)
            if not new.empty:
                acc += leaf_vector(addr, new)
        for jid, jold, jnew in jobs:
            if jold == jnew:
                continue
            if jold is not None:
                acc -= job_leaf_vector(jid, jold, False)
            if jnew is not None:
                acc += job_leaf_vector(jid, jnew)
        for key, eold, enew in econ:  # economy records (None = absent)
            if eold == enew:
                continue
            if eold is not None:
                acc -= econ_leaf_vector(key, eold, False)
            if enew is not None:
                acc += econ_leaf_vector(key, enew)
        return Supply(self.minted + minted, self.burned + burned, acc.astype("<u2").tobytes())


@dataclass(frozen=True)
class BlockDiff:
    """Everything a block changes: enough to write it and to undo it."""

    before: dict[bytes, Account]
    after: dict[bytes, Account]
    supply_before: Supply
    supply_after: Supply
    fees: int
    subsidy: int
    jobs_before: dict[bytes, JobRecord | None] = field(default_factory=dict)  # None: did not exist
    jobs_after: dict[bytes, JobRecord] = field(default_factory=dict)
    events: tuple[tuple[bytes, str], ...] = ()  # automatic transitions: (job_id, "released" | "refunded")
    econ_before: dict[bytes, bytes | None] = field(default_factory=dict)  # economy records; None: absent
    econ_after: dict[bytes, bytes | None] = field(default_factory=dict)

    @property
    def state_root(self) -> bytes:
        return self.supply_after.root


def check_tx_state(cur: Getter, tx: Transaction) -> None:
    """Raise TxError unless tx can be applied on top of `cur` (nonce and balance)."""
    s = cur(tx.sender)
    if tx.nonce != s.nonce or s.nonce >= U64_MAX:
        raise TxError("bad-txn-nonce", f"nonce {tx.nonce}, account expects {s.nonce}")
    if s.balance < tx.amount + tx.fee:
        raise TxError("bad-txn-balance", f"balance {s.balance} < {tx.amount + tx.fee}")


def apply_tx(cur: Getter, tx: Transaction) -> dict[bytes, Account]:
    """The accounts a (context-checked) transfer writes, given the current view `cur`. Job kinds need
    the job state: use `StateOverlay.apply_tx`."""
    check_tx_state(cur, tx)
    if tx.kind != KIND_TRANSFER:  # guarded earlier by check_tx; kept for defence in depth
        raise TxError("bad-txn-kind", f"transaction kind {tx.kind} needs the job state")
    s = cur(tx.sender)
    out = {tx.sender: Account(s.balance - tx.amount - tx.fee, s.nonce + 1)}
    rcpt = tx.payload.recipient
    r = out[rcpt] if rcpt in out else cur(rcpt)
    out[rcpt] = Account(r.balance + tx.amount, r.nonce)
    return out


@runtime_checkable
class StateSource(JobSource, EconSource, Protocol):
    """A job source that also holds the economy's records (ChainState, MemoryState, a batch view, the
    mempool's pending view): what an overlay needs for the economy's kinds."""


@dataclass
class _BookScan:
    """One order book of the base as an overlay reads it: the entries scanned so far, the rest of the scan,
    and the index of the first entry the overlay has not deleted."""

    rest: Iterator[tuple[bytes, bytes]]
    items: list[tuple[bytes, bytes]] = field(default_factory=list)
    head: int = 0


class StateOverlay:
    """Accounts and job records changed so far on top of a base state (reads fall through).

    `apply_tx` checks and applies one transaction atomically: on TxError nothing changed. Without a
    job source and config, job kinds are rejected with ``bad-txn-kind``."""

    def __init__(
        self, get: Getter, jobs: JobSource | None = None, cfg: ChainConfig | None = None, height: int | None = None
    ):
        self.base_get = get
        self.source = jobs
        self.cfg = cfg
        self.height = height
        self.accts: dict[bytes, Account] = {}
        self.jobs: dict[bytes, JobRecord] = {}
        self.econ: dict[bytes, bytes | None] = {}  # economy records written (None: deleted)
        self.econ_source: EconSource | None = jobs if isinstance(jobs, StateSource) else None
        self._econ_keys: list[bytes] = []  # sorted keys of self.econ (for ordered scans)
        # what the base held for every key read so far (the base does not change under an overlay): each
        # key is read from the base once, and apply_block's before-values come from here
        self.base_accts: dict[bytes, Account] = {}
        self.base_jobs: dict[bytes, JobRecord | None] = {}
        self.base_econ: dict[bytes, bytes | None] = {}
        self._books: dict[bytes, _BookScan] = {}  # the base's order books, each scanned once (see _book_head)

    def _job_context(self) -> tuple[JobSource, ChainConfig, int] | None:
        """(source, cfg, height) when job transactions can apply, else None."""
        if self.source is None or self.cfg is None or self.height is None:
            return None
        return self.source, self.cfg, self.height

    def _econ_context(self) -> tuple[ChainConfig, int] | None:
        """(cfg, height) when economy transactions can apply, else None."""
        if self.econ_source is None or self.cfg is None or self.height is None:
            return None
        return self.cfg, self.height

    @property
    def jobs_enabled(self) -> bool:
        return self._job_context() is not None

    @property
    def econ_enabled(self) -> bool:
        return self._econ_context() is not None

    def get(self, a: bytes) -> Account:
        if a in self.accts:
            return self.accts[a]
        return self.base_account(a)

    def base_account(self, a: bytes) -> Account:
        """The base's account `a` (read once)."""
        x = self.base_accts.get(a)
        if x is None:
            x = self.base_accts[a] = self.base_get(a)
        return x

    def get_econ(self, key: bytes) -> bytes | None:
        if key in self.econ:
            return self.econ[key]
        return self.base_econ_record(key)

    def base_econ_record(self, key: bytes) -> bytes | None:
        """The base's economy record `key` (read once)."""
        if key in self.base_econ:
            return self.base_econ[key]
        v = self.base_econ[key] = self.econ_source.get_econ(key) if self.econ_source is not None else None
        return v

    def scan_econ(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Economy records under `prefix` in key order, this overlay's writes on top (from the first key
        >= `start` when given)."""
        base: Iterable[tuple[bytes, bytes]]
        if self.econ_source is None:
            base = ()
        elif start is not None:
            base = self.econ_source.scan_econ(prefix, start)
        elif prefix[:1] == b"B":  # an order book: skip its head of makers this block already removed
            base = self._book_head(self.econ_source, prefix)
        else:
            base = self._recorded(self.econ_source.scan_econ(prefix))
        it = economy.merge_scan(base, self.econ, prefix, self._econ_keys)
        return it if start is None else ((k, v) for k, v in it if k >= start)

    def _recorded(self, pairs: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """`pairs` of the base, remembered as read (apply_block's before-values need no second read)."""
        be = self.base_econ
        for k, v in pairs:
            be[k] = v
            yield k, v

    def _book_head(self, src: EconSource, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The base's book entries under `prefix`, starting after the run of leading entries this overlay
        deleted (remembered per prefix). Book keys carry a unique sequence number and are never written
        again once deleted, so the run only grows: without this, every taker in a block would re-walk the
        makers that earlier takers in the block consumed. The base's book is scanned once per overlay:
        its takers share one scan, extended as far as the deepest of them reaches."""
        book = self._books.get(prefix)
        if book is None:
            book = self._books[prefix] = _BookScan(self._recorded(src.scan_econ(prefix)))
        items = book.items
        i = book.head
        while True:
            if i < len(items):
                k, v = items[i]
            else:
                nxt = next(book.rest, None)
                if nxt is None:
                    return
                items.append(nxt)
                k, v = nxt
            if i == book.head and k in self.econ and self.econ[k] is None:
                book.head = i + 1
            i += 1
            yield k, v

    def commit_econ(self, kv: dict[bytes, bytes | None]) -> None:
        """Write economy records (None = delete) into the overlay."""
        import bisect

        for k in kv:
            if k not in self.econ:
                bisect.insort(self._econ_keys, k)
        self.econ.update(kv)

    def _econ_job_closures(self, recs: dict[bytes, JobRecord]) -> list[tuple[bytes, int]]:
        """Economy hook: funded jobs that close give their refund back to its non-free sources."""
        econ = self._econ_context()
        if econ is None:
            return []
        cfg, height = econ
        closed = []
        for j, r in recs.items():
            if r.live:
                continue
            old = self.get_job(j)
            if old is not None and old.live:
                closed.append((j, r, old.escrow if r.status != RELEASED else 0))  # refunded to the client
        return economy.job_closed(self, height, cfg, closed)

    def _certify(self, tx: Transaction, source: JobSource, cfg: ChainConfig, height: int) -> economy.Ledger:
        """A result's work certificate (chain/workcert.py): checked against the job, the claimer and this
        chain, and against the used set; returns the Ledger that records it (committed with the result)."""
        if self._econ_context() is None:
            raise TxError("bad-txn-kind", "a work certificate needs the economy state")
        from chain.workcert import check_certificate

        p = tx.payload
        assert isinstance(p, JobResult) and p.cert is not None
        rec = self.get_job(p.job_id)
        assert rec is not None  # the job rules accepted the result
        th, jk = check_certificate(cfg, rec, tx.sender, p.cert, height, source.block_hash_at)
        return economy.certify(self, height, cfg, p.job_id, th, jk)

    def get_job(self, job_id: bytes) -> JobRecord | None:
        if job_id in self.jobs:
            return self.jobs[job_id]
        return self.base_job(job_id)

    def base_job(self, job_id: bytes) -> JobRecord | None:
        """The base's job record (read once)."""
        if job_id in self.base_jobs:
            return self.base_jobs[job_id]
        r = self.base_jobs[job_id] = self.source.get_job(job_id) if self.source is not None else None
        return r

    def credit(self, a: bytes, amount: int) -> None:
        if amount:
            x = self.get(a)
            self.accts[a] = Account(x.balance + amount, x.nonce)

    def apply_tx(self, tx: Transaction) -> None:
        if tx.kind == KIND_TRANSFER:
            self.accts.update(apply_tx(self.get, tx))  # checks nonce and balance
            return
        econ = self._econ_context()
        if tx.kind in ECON_KINDS:  # the economy: chain/economy.py, chain/market.py
            if econ is None:
                raise TxError("bad-txn-kind", f"transaction kind {tx.kind} needs the economy state")
            economy.apply_econ_tx(self, tx, econ[1], econ[0])
            return
        funding = None
        if tx.kind == KIND_JOB_SUBMIT and econ is not None:  # escrow drawn in the economy's spending order
            funding = economy.prepare_job_funding(self, tx, econ[1], econ[0])
        else:
            check_tx_state(self.get, tx)
        ctx = self._job_context()
        if tx.kind not in JOB_KINDS or ctx is None:
            raise TxError("bad-txn-kind", f"unknown transaction kind {tx.kind}")
        source, cfg, height = ctx
        credits, recs = job_tx_effects(self.get_job, tx, height, cfg, source.block_hash_at)
        if isinstance(tx.payload, JobResult) and tx.payload.cert is not None:
            self._certify(tx, source, cfg, height).commit()
        if funding is not None:
            funding.commit()
        else:
            s = self.get(tx.sender)
            self.accts[tx.sender] = Account(s.balance - tx.amount - tx.fee, s.nonce + 1)
        credits = list(credits) + self._econ_job_closures(recs)
        for a, v in credits:
            self.credit(a, v)
        self.jobs.update(recs)

    def run_schedule(self) -> list[tuple[bytes, str]]:
        """The automatic job transitions at the end of block `height`, then the economy's schedule."""
        ctx = self._job_context()
        if ctx is None:
            return []
        source, cfg, h = ctx
        ids = set(source.due_jobs(h))
        ids.update(j for j, r in self.jobs.items() if r.due == h)
        credits, recs, events = due_effects(self.get_job, ids, h)
        credits = list(credits) + self._econ_job_closures(recs)
        for a, v in credits:
            self.credit(a, v)
        self.jobs.update(recs)
        if self._econ_context() is not None:
            events = list(events) + economy.run_due(self, h, cfg)
        return events


def job_source_of(get: Getter) -> StateSource | None:
    """The state source behind an account getter that is a bound method of a state object (ChainState,
    MemoryState): lets callers that only pass ``cs.get_account`` still see the jobs and the economy."""
    owner = getattr(get, "__self__", None)
    return owner if isinstance(owner, StateSource) else None


def apply_block(
    get: Getter,
    supply: Supply,
    txs: Iterable[Transaction],
    miner: bytes,
    subsidy: int,
    *,
    height: int | None = None,
    cfg: ChainConfig | None = None,
    jobs: JobSource | None = None,
) -> BlockDiff:
    """Apply txs in order, pay subsidy + fees to the miner, then run the job schedule of `height`.
    Pure: `get` and `jobs` are only read. Job transactions and the schedule need height, cfg and jobs."""
    ov = StateOverlay(get, jobs, cfg, height)
    fees = 0
    for tx in txs:
        ov.apply_tx(tx)
        fees += tx.fee
    ov.credit(miner, subsidy + fees)
    if miner not in ov.accts:
        ov.accts[miner] = ov.get(miner)
    events = ov.run_schedule()
    after = ov.accts
    before = {a: ov.base_account(a) for a in after}
    jobs_before = {j: ov.base_job(j) for j in ov.jobs}
    econ_before = {k: ov.base_econ_record(k) for k in ov.econ}
    econ_after = {k: v for k, v in ov.econ.items() if v != econ_before[k]}
    econ_before = {k: econ_before[k] for k in econ_after}
    new_supply = supply.updated(
        ((a, before[a], after[a]) for a in after),
        minted=subsidy,
        jobs=((j, jobs_before[j], r) for j, r in ov.jobs.items()),
        econ=((k, econ_before[k], v) for k, v in econ_after.items()),
    )
    return BlockDiff(
        before,
        after,
        supply,
        new_supply,
        fees,
        subsidy,
        jobs_before,
        dict(ov.jobs),
        tuple(events),
        econ_before,
        econ_after,
    )


def genesis_state(
    alloc: Iterable[tuple[bytes, int]], issuers: Iterable[GenesisIssuer] = ()
) -> tuple[dict[bytes, Account], Supply]:
    """Genesis accounts and supply. `issuers` (cfg.genesis_issuers) are registered with their deposits
    minted at genesis; their records are `genesis_econ(issuers)`."""
    accounts = {a: Account(v, 0) for a, v in alloc}
    econ = genesis_econ(issuers)
    minted = sum(v for _, v in alloc) + sum(i.deposit for i in issuers)
    supply = Supply.zero().updated(
        ((a, EMPTY, acct) for a, acct in accounts.items()), minted=minted, econ=((k, None, v) for k, v in econ.items())
    )
    return accounts, supply


def genesis_econ(issuers: Iterable[GenesisIssuer]) -> dict[bytes, bytes]:
    """The economy records of the genesis issuers (each has address, mode, vintage_periods, fee_bps,
    buyback_bps, deposit)."""
    return {
        economy.k_issuer(i.address): economy.Issuer(
            i.mode, i.vintage_periods, i.fee_bps, i.buyback_bps, i.deposit, 0
        ).encode()
        for i in issuers
    }


class MemoryState:
    """A dict-backed state (control replays, verify, tests): accounts, job records and the schedule."""

    def __init__(
        self,
        accounts: dict[bytes, Account],
        supply: Supply,
        jobs: dict[bytes, JobRecord] | None = None,
        hashes: list[bytes] | None = None,
        econ: dict[bytes, bytes] | None = None,
    ):
        self.accounts = dict(accounts)
        self.supply = supply
        self.jobs: dict[bytes, JobRecord] = dict(jobs or {})
        self.hashes: list[bytes] = list(hashes or [])  # block hash by height (answers to challenges need it)
        self.econ: dict[bytes, bytes] = dict(econ or {})
        self._econ_keys = sorted(self.econ)
        self._due: dict[int, set[bytes]] = {}
        for j, r in self.jobs.items():
            if r.due:
                self._due.setdefault(r.due, set()).add(j)

    def copy(self) -> "MemoryState":
        return MemoryState(self.accounts, self.supply, self.jobs, self.hashes, self.econ)

    def get_econ(self, key: bytes) -> bytes | None:
        return self.econ.get(key)

    def scan_econ(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Economy records under `prefix`, in key order (from the first key >= `start`)."""
        import bisect

        i = bisect.bisect_left(self._econ_keys, max(prefix, start) if start is not None else prefix)
        keys = self._econ_keys
        while i < len(keys) and keys[i].startswith(prefix):
            k = keys[i]
            yield k, self.econ[k]
            i += 1

    def get(self, a: bytes) -> Account:
        return self.accounts.get(a, EMPTY)

    def get_job(self, job_id: bytes) -> JobRecord | None:
        return self.jobs.get(job_id)

    def due_jobs(self, height: int) -> list[bytes]:
        return sorted(self._due.get(height, ()))

    def block_hash_at(self, height: int) -> bytes | None:
        return self.hashes[height] if 0 <= height < len(self.hashes) else None

    def apply(self, diff: BlockDiff) -> None:
        for a, acct in diff.after.items():
            if acct.empty:
                self.accounts.pop(a, None)
            else:
                self.accounts[a] = acct
        for j, rec in diff.jobs_after.items():
            old = self.jobs.get(j)
            if old is not None and old.due:
                self._due.get(old.due, set()).discard(j)
            self.jobs[j] = rec
            if rec.due:
                self._due.setdefault(rec.due, set()).add(j)
        import bisect

        for k, v in diff.econ_after.items():
            if v is None:
                if self.econ.pop(k, None) is not None:
                    self._econ_keys.pop(bisect.bisect_left(self._econ_keys, k))
            else:
                if k not in self.econ:
                    bisect.insort(self._econ_keys, k)
                self.econ[k] = v
        self.supply = diff.supply_after

    def total_balance(self) -> int:
        return sum(a.balance for a in self.accounts.values())

    def locked(self) -> tuple[int, int]:
        """(Σ escrow, Σ bonds) held by live jobs."""
        return (sum(r.escrow for r in self.jobs.values()), sum(r.bond_held for r in self.jobs.values()))

    def check_conservation(self) -> None:
        escrow, bonds = self.locked()
        et = economy.econ_totals(self.econ.items())
        total = self.total_balance() + escrow + bonds + et.tokens
        if total != self.supply.minted - self.supply.burned:
            raise AssertionError(
                f"conservation broken: {self.total_balance()} + escrow {escrow} + bonds {bonds} "
                f"+ economy {et} != {self.supply.minted} - {self.supply.burned}"
            )
        et.check_credits()

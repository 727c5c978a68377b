"""Transaction pool: admission against the tip state, fee priority, size limits, expiry, persistence.

- Admission: well formed and signed for this chain (`ChainState.validate_tx`), and applicable on top of
  the tip state *plus* the sender's pending transactions (nonces must be consecutive; the balance must
  cover all of them). Job transactions go through `ChainState.validate_tx(tx, get=<pending view>)`: the
  job rules against the tip's job state as if in the next block, so bad ones are refused with their
  `bad-job-*` / fraud-proof reason. A job tx is checked against the job as the pending job txs that
  touch it (in admission order; not the sender's own later nonces) leave it: a claim on a pending
  submit and a result on a pending claim are admitted (one-block latency, docs/jobs.md), and a second
  claim on a job already claimed in the pool is refused (`bad-job-claimed`, first seen wins). A pending
  tx with the same sender and nonce is replaced only by a higher fee.
- The sender's pending state (`pending_state`) is the tip with the sender's earlier pending txs applied by
  the state transition itself (`StateOverlay.apply_tx`): a pending job submit draws its escrow in the
  economy's spending order (allocation, vintages, spend-only, free: `chain.economy.draw`, the one rule),
  so a subscriber paying from its allocation can queue several submits (docs/economy.md).
- Priority: fee per byte; a sender's transactions are taken in nonce order (ancestor-aware greedy),
  and a claim comes after the pending submit of its job.
- Limits: `max_txs` and `max_bytes`; when full, the lowest fee-rate transaction (with the sender's later
  ones) is evicted, and a new tx that pays less than it is refused (`mempool-full`).
- Expiry: transactions older than `expiry_s` are dropped.
- After every chain change, `resync` drops what was mined or became invalid and re-adds the
  transactions of disconnected blocks (`ImportResult.disconnected_txs`).
- Persisted to ``<datadir>/mempool.dat`` (msgpack list of [tx, time]) on shutdown and reloaded
  (re-validated) at start.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import msgpack

from chain.errors import EncodingError, TxError, ValidationError
from chain.jobs import JobRecord, job_tx_effects
from chain.state import Account, StateOverlay, check_tx_state
from chain.tx import JOB_KINDS, KIND_JOB_SUBMIT, Transaction, check_tx, decode_tx
from chain.econtx import ECON_KINDS
from node.logfmt import event

log = logging.getLogger("pouw.mempool")


@dataclass
class Entry:
    tx: Transaction
    time: float
    size: int

    @property
    def feerate(self) -> float:
        return self.tx.fee / max(1, self.size)


class MempoolError(ValidationError):
    """A transaction the pool refuses (reason is stable, e.g. ``mempool-full``, ``bad-txn-nonce``)."""


def job_of(tx: Transaction) -> bytes | None:
    """The job a job transaction touches (a submit creates the job with its own txid), else None."""
    if tx.kind == KIND_JOB_SUBMIT:
        return tx.txid
    return getattr(tx.payload, "job_id", None) if tx.kind in JOB_KINDS else None


class PendingJobs:
    """The job state of the tip plus the given pending job records (a JobSource for admission)."""

    def __init__(self, chain, recs: dict[bytes, JobRecord], econ=None):
        self.chain = chain
        self.recs = recs
        self.econ = econ if econ is not None else chain  # economy records: the tip, or a sender's pending state

    def get_job(self, job_id: bytes) -> JobRecord | None:
        return self.recs[job_id] if job_id in self.recs else self.chain.get_job(job_id)

    def due_jobs(self, height: int):
        return self.chain.due_jobs(height)

    def block_hash_at(self, height: int) -> bytes | None:
        return self.chain.block_hash_at(height)

    # the economy's records at the tip (docs/economy.md): job submits draw on allocations, economy kinds
    def get_econ(self, key: bytes) -> bytes | None:
        return self.econ.get_econ(key)

    def scan_econ(self, prefix: bytes, start: bytes | None = None):
        return self.econ.scan_econ(prefix, start)


class Mempool:
    def __init__(
        self,
        chain,
        *,
        max_txs: int = 5000,
        max_bytes: int = 5_000_000,
        expiry_s: float = 3 * 3600,
        clock: Callable[[], float] = time.time,
        admit: Callable[[Transaction], None] | None = None,
    ):
        self.chain = chain
        self.admit = admit  # the node's extra policy on every admission (e.g. a result only with its C)
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.expiry_s = expiry_s
        self.clock = clock
        self.entries: dict[bytes, Entry] = {}
        self.by_sender: dict[bytes, dict[int, bytes]] = {}  # sender -> nonce -> txid
        self.bytes = 0
        self.version = 0  # bumps on every change (the miner rebuilds its template on better-paying work)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def get(self, txid: bytes) -> Transaction | None:
        e = self.entries.get(txid)
        return e.tx if e else None

    # --- admission -------------------------------------------------------------------------------------
    def pending_state(self, sender: bytes, upto_nonce: int) -> StateOverlay:
        """The tip with `sender`'s pending txs of nonce < upto_nonce applied by the state transition (as if
        in the next block): accounts, job records and economy records as the block would leave them. A
        pending tx that no longer applies (the tip moved; resync drops it) debits amount + fee as before."""
        cfg = self.chain.cfg
        ov = StateOverlay(self.chain.get_account, PendingJobs(self.chain, {}), cfg, self.chain.height + 1)
        pend = self.by_sender.get(sender, {})
        for n in sorted(pend):
            if n >= upto_nonce:
                break
            tx = self.entries[pend[n]].tx
            if tx.kind in JOB_KINDS:
                ov.source = self.pending_jobs(tx)  # the job as the pending txs before this one leave it
            try:
                ov.apply_tx(tx)
            except TxError:
                s = ov.get(sender)
                ov.accts[sender] = Account(s.balance - tx.amount - tx.fee, s.nonce + 1)
        return ov

    def add(self, tx: Transaction, *, check_sig: bool = True) -> bool:
        """Admit tx; returns False if already present. Raises TxError/MempoolError with a reason.
        `check_sig=False` only for transactions verified before (re-admission after a chain change)."""
        if tx.txid in self.entries:
            return False
        sender = tx.sender
        cfg = self.chain.cfg
        check_tx(tx, cfg.chain_id, cfg.max_tx_bytes, check_sig=check_sig)  # well formed, signed, size
        if self.admit is not None:
            self.admit(tx)
        pend = self.by_sender.get(sender, {})
        replaced: bytes | None = None
        if tx.nonce in pend:
            old = self.entries[pend[tx.nonce]]
            if tx.fee <= old.tx.fee:
                raise MempoolError(
                    "txn-mempool-conflict", "same nonce pending with an equal or higher fee", punish=False
                )
            replaced = old.tx.txid
        pstate = self.pending_state(sender, tx.nonce)
        if tx.kind in JOB_KINDS or tx.kind in ECON_KINDS:  # job and economy rules need the state at the tip
            # job rules at the tip as if in the next block (bad-job-* / fraud-proof reasons), on the
            # sender's pending state (its account and economy records after its pending txs)
            jobs = self.pending_jobs(tx)
            jobs.econ = pstate
            self.chain.validate_tx(tx, get=pstate.get, jobs=jobs)
        else:
            check_tx_state(pstate.get, tx)  # nonce consecutive, balance covers it
        size = len(tx.encoded)
        e = Entry(tx, self.clock(), size)
        if replaced is None and (len(self.entries) >= self.max_txs or self.bytes + size > self.max_bytes):
            worst = min(self.entries.values(), key=lambda x: (x.feerate, -x.time))
            if worst.feerate >= e.feerate or (worst.tx.sender == sender and worst.tx.nonce <= tx.nonce):
                raise MempoolError("mempool-full", "fee rate below the pool's minimum", punish=False)
            self._remove_from(worst.tx, "evicted")
        if replaced is not None:
            self._remove_from(self.entries[replaced].tx, "replaced")
        self.entries[tx.txid] = e
        self.by_sender.setdefault(sender, {})[tx.nonce] = tx.txid
        self.bytes += size
        self.version += 1
        return True

    def pending_jobs(self, tx: Transaction) -> PendingJobs:
        """The job `tx` touches as the pending job txs before it leave it (see the module docstring)."""
        jid = job_of(tx)
        recs: dict[bytes, JobRecord] = {}
        view = PendingJobs(self.chain, recs)
        h = self.chain.height + 1
        for e in self.entries.values():
            t = e.tx
            if job_of(t) != jid or (t.sender == tx.sender and t.nonce >= tx.nonce):
                continue
            try:
                recs.update(job_tx_effects(view.get_job, t, h, self.chain.cfg, self.chain.block_hash_at)[1])
            except TxError:
                continue
        return view

    # --- removal ---------------------------------------------------------------------------------------
    def _remove(self, txid: bytes) -> None:
        e = self.entries.pop(txid, None)
        if e is None:
            return
        self.bytes -= e.size
        d = self.by_sender.get(e.tx.sender)
        if d is not None:
            d.pop(e.tx.nonce, None)
            if not d:
                del self.by_sender[e.tx.sender]
        self.version += 1

    def _remove_from(self, tx: Transaction, why: str) -> None:
        """Remove tx and the sender's later pending txs (they depend on it)."""
        later = [t for n, t in self.by_sender.get(tx.sender, {}).items() if n >= tx.nonce]
        for t in later:
            self._remove(t)
        event(log, logging.DEBUG, "mempool removed txs", count=len(later), sender=tx.sender.hex()[:8], why=why)

    def remove_mined(self, txs: Iterable[Transaction]) -> None:
        for t in txs:
            self._remove(t.txid)

    def resync(self, readd: Iterable[Transaction] = ()) -> int:
        """Re-validate every pending tx against the new tip (after connect/disconnect/reorg), put back the
        given (disconnected) txs, drop expired ones. Returns the number of txs re-added."""
        now = self.clock()
        old = sorted(
            list(self.entries.values()) + [Entry(t, now, len(t.encoded)) for t in readd],
            key=lambda e: (e.tx.sender, e.tx.nonce),
        )
        readd_ids = {t.txid for t in readd}
        self.entries.clear()
        self.by_sender.clear()
        self.bytes = 0
        self.version += 1
        back = 0
        todo = [e for e in old if now - e.time <= self.expiry_s]
        while todo:  # passes until nothing more gets in: a claim may need a submit of a later sender
            retry = []
            for e in todo:
                if e.tx.txid in self.entries:
                    continue
                try:
                    if self.add(e.tx, check_sig=False):  # pool entries and block txs were verified before
                        self.entries[e.tx.txid].time = e.time
                        back += e.tx.txid in readd_ids
                except ValidationError:
                    retry.append(e)
            if len(retry) == len(todo):
                break
            todo = retry
        return back

    def expire(self) -> int:
        """Drop expired transactions (and the sender's later ones); returns how many left the pool."""
        now = self.clock()
        before = len(self.entries)
        for t in [e.tx for e in self.entries.values() if now - e.time > self.expiry_s]:
            if t.txid in self.entries:
                self._remove_from(t, "expired")
        return before - len(self.entries)

    # --- selection -------------------------------------------------------------------------------------
    def ordered(self, limit: int | None = None) -> list[Transaction]:
        """Highest fee rate first, each sender's txs in nonce order."""
        heads: list[tuple[float, float, bytes, int]] = []
        cursors = {s: sorted(d) for s, d in self.by_sender.items()}
        for s, nonces in cursors.items():
            e = self.entries[self.by_sender[s][nonces[0]]]
            heapq.heappush(heads, (-e.feerate, e.time, s, 0))
        out: list[Transaction] = []
        emitted: set[bytes] = set()
        waiting: dict[bytes, list[tuple[float, float, bytes, int]]] = {}  # pending submit txid -> parked heads
        while heads and (limit is None or len(out) < limit):
            head = heapq.heappop(heads)
            _, _, s, i = head
            tx = self.entries[self.by_sender[s][cursors[s][i]]].tx
            dep = job_of(tx) if tx.kind in JOB_KINDS and tx.kind != KIND_JOB_SUBMIT else None
            if dep is not None and dep in self.entries and dep not in emitted:
                waiting.setdefault(dep, []).append(head)  # after its job's submit (and the sender's rest too)
                continue
            out.append(tx)
            emitted.add(tx.txid)
            for h in waiting.pop(tx.txid, ()):
                heapq.heappush(heads, h)
            if i + 1 < len(cursors[s]):
                e = self.entries[self.by_sender[s][cursors[s][i + 1]]]
                heapq.heappush(heads, (-e.feerate, e.time, s, i + 1))
        return out

    def pending_nonce(self, sender: bytes) -> int:
        acct = self.chain.get_account(sender)
        return acct.nonce + len(self.by_sender.get(sender, {}))

    def total_fees(self) -> int:
        return sum(e.tx.fee for e in self.entries.values())

    # --- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> int:
        path = Path(path)
        data = msgpack.packb([[e.tx.encoded, e.time] for e in self.entries.values()], use_bin_type=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(self.entries)

    def load(self, path: str | Path) -> int:
        path = Path(path)
        if not path.exists():
            return 0
        try:
            items = msgpack.unpackb(
                path.read_bytes(),
                raw=False,
                max_bin_len=self.chain.cfg.max_tx_bytes,
                max_array_len=max(self.max_txs, 2),
                max_map_len=0,
                max_str_len=0,
                max_ext_len=0,
            )
        except Exception as e:
            event(log, logging.WARNING, "ignoring unreadable mempool file", path=str(path), why=str(e))
            return 0
        n = 0
        now = self.clock()
        txs = []
        for item in items if isinstance(items, list) else []:
            try:
                raw, t = item
                txs.append((decode_tx(raw, self.chain.cfg.max_tx_bytes), float(t)))
            except (EncodingError, ValueError, TypeError):
                continue
        for tx, t in sorted(txs, key=lambda x: (x[0].sender, x[0].nonce)):
            if now - t > self.expiry_s:
                continue
            try:
                if self.add(tx):
                    self.entries[tx.txid].time = t
                    n += 1
            except (TxError, ValidationError):
                pass
        return n

"""The miner's paid-job path: choose, fetch and check operands, compute, then claim and post the result
together, and answer data-availability challenges (docs/jobs.md, docs/jobs-client.md).

One job at a time, driven by the mining loop (`Miner._run` calls `PaidJobs.step()` before each pass):

1. idle: the best job (fee per multiply-add order) among the chain's open jobs *and the submits waiting
   in the mempool*, at or above this node's fee floor (`min_fee_rate`, base units per multiply-add),
   whose deadline leaves room, whose bond (max(`bond`, chain.jobs.required_bond)) this node can pay and
   that is not on the retry list -> ``fetching``. No transaction is sent yet: no bond is ever put on a
   job whose operands this node has not fetched and checked.
2. fetching: both operand blobs are fetched by their addresses (= H_A, H_B: local store, else the
   peers' HTTP APIs; `BlobStore.put` checks each commits to its address), range-checked and prepared
   -> ``ready``. Operands nobody serves -> the job goes on the retry list (a later pass tries again).
3. ready: the miner mines one pass with the job's A, B in the header template (`node.engine.mine_paid`): the
   same GEMM draws the block lottery, yields the exact C and, from the same tickets, the pass's work
   certificate (pouw.share), attached to the result when the job's escrow holds restricted tokens
   (allocation, vintage, spend-only: released free only with one); a pass without a share is followed by
   another, at most CERT_PASSES in all (also while the miner waits out its block interval:
   `ready` wakes it, and a block found then is dropped, see node.server.miner). `finished` stores C (address H_C, served at
   once) and sends the claim and the result back to back (consecutive nonces: the mempool admits a
   claim on a pending submit and a result on a pending claim, and templates keep them in order, so
   submit, claim and result can share one block) -> ``posted``.
4. posted: done when the chain shows our result; re-sent if our transactions dropped out while the job
   is still ours to take; if another miner's claim won, the job goes on the retry list until that
   claim's exclusivity ends (a lapsed claim reopens the job on chain, and this node tries again with
   the C it already holds).

Challenges: every pass, a job this node resulted that the client challenged is answered (the sampled
rows of C with their openings, chain.jobs.challenge_rows) from the C blob in the store.

``cheat=True`` (NodeConfig.cheat_jobs, set only by in-process tests: no flag or environment variable of a
running node reaches it) adds 1 to C[0][0] before committing: for tests of the dispute path only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

from chain.errors import ValidationError
from chain.jobs import (
    CHALLENGED,
    CLAIMED,
    OPEN,
    RESULTED,
    JobRecord,
    challenge_row_count,
    challenge_rows,
    required_bond,
)
from chain.tx import KIND_JOB_CLAIM, KIND_JOB_SUBMIT, make_job_answer, make_job_claim, make_job_result
from node.blobs import BlobError, decode_array, encode_array
from node.server.jobinfo import below_floor, fee_floor
from node.logfmt import event

if TYPE_CHECKING:
    from node.server.interfaces import PaidJobsHost

log = logging.getLogger("pouw.jobs")

CERT_PASSES = 3  # passes over a restricted-funded job until one holds a work certificate (each ~86 %)


@dataclass
class Active:
    job_id: bytes
    state: str  # fetching | ready | posted
    rec: JobRecord  # the job as first seen (from the chain or a pending submit)
    claim_txid: bytes = b""
    result_txid: bytes = b""
    prepared: object = None  # pouw.miner.PreparedJob
    result: bytes | None = None  # h_c once computed
    fetch_task: asyncio.Task | None = field(default=None, repr=False)
    share: tuple | None = None  # the last pass's (WorkCert, template height), set by the miner
    cert: tuple | None = None  # the certificate the result carries (WorkCert, template height)
    passes: int = 0  # passes run over this job


def commit_c(c, cheat: bool):
    """(h_c, blob bytes) of C; a cheating miner corrupts C[0][0] first. Blocking."""
    from pouw.commit import commit_result

    if cheat:
        c = c.clone()
        c[0, 0] += 1
    return commit_result(c), encode_array(c)


def answer_rows(data: bytes, rows: list[int], m: int, n: int):
    """The answer to a challenge from C's blob bytes: [(i, row, opening)] for the sampled `rows`."""
    import torch
    from pouw.commit import open_result_rows

    c = torch.from_numpy(decode_array(data, "int32", (m, n)))
    return open_result_rows(c, rows)


class PaidJobs:
    def __init__(
        self, node: PaidJobsHost, *, bond: int, tx_fee: int, cheat: bool = False, min_fee_rate: Fraction | None = None
    ):
        self.node = node
        self.key = node.node_key
        self.bond = bond
        self.tx_fee = tx_fee
        self.cheat = cheat
        self.min_fee_rate = min_fee_rate if min_fee_rate is not None else fee_floor(None, node.cfg)
        self.active: Active | None = None
        self.retry_at: dict[bytes, int] = {}  # job id -> first height at which this node tries it again
        self.done: list[bytes] = []  # job ids this node posted results for
        self.answers: dict[bytes, bytes] = {}  # job id -> our answer txid
        self.cached: dict[tuple, bytes] = {}  # (h_a, h_b, m, k, n) -> h_c this node computed
        self.claims = 0
        self.reused = 0  # repeated jobs answered from `cached` without a new pass
        self.cert_passes = 0  # extra passes run because a pass held no work certificate
        self.ready = asyncio.Event()  # set when a job turns ready: wakes a miner waiting out its interval

    @property
    def address(self) -> bytes:
        return self.key.address

    def _send(self, tx) -> bool:
        try:
            self.node.add_tx(tx)
            return True
        except ValidationError as e:
            event(log, logging.INFO, "job tx refused", txid=tx.txid.hex()[:16], why=str(e))
            return False

    def _known_tx(self, txid: bytes) -> bool:
        return txid in self.node.mempool or txid in self.node.txindex

    def bond_for(self, rec: JobRecord) -> int:
        return max(self.bond, required_bond(self.node.cfg, rec.fee))

    # --- the job as the next block would see it ----------------------------------------------------------
    def _job(self, job_id: bytes) -> JobRecord | None:
        """The chain's record, else an open record for a submit waiting in the mempool."""
        rec = self.node.chain.get_job(job_id)
        if rec is not None:
            return rec
        tx = self.node.mempool.get(job_id)
        if tx is None or tx.kind != KIND_JOB_SUBMIT:
            return None
        p = tx.payload
        h = self.node.chain.height + 1
        return JobRecord(
            OPEN, tx.sender, p.h_a, p.h_b, p.m, p.k, p.n, p.max_fee, p.deadline, p.blob_a, p.blob_b, h, due=p.deadline
        )

    def _pending_claim_by_other(self, job_id: bytes) -> bool:
        return any(
            e.tx.kind == KIND_JOB_CLAIM and e.tx.payload.job_id == job_id and e.tx.sender != self.address
            for e in self.node.mempool.entries.values()
        )

    def candidates(self) -> list[tuple[bytes, JobRecord]]:
        """Jobs this node would take now, best fee per multiply-add first."""
        cs = self.node.chain
        h = cs.height + 1
        seen = dict(cs.open_jobs())
        for e in list(self.node.mempool.entries.values()):
            if e.tx.kind == KIND_JOB_SUBMIT and e.tx.txid not in seen:
                rec = self._job(e.tx.txid)
                if rec is not None:
                    seen[e.tx.txid] = rec
        out = []
        for jid, rec in seen.items():
            if self.retry_at.get(jid, 0) > h or rec.deadline < h or rec.status != OPEN:
                continue
            if below_floor(self.min_fee_rate, rec.fee, rec.macs):
                continue
            out.append((jid, rec))
        out.sort(key=lambda x: (-x[1].fee_per_mac, x[1].deadline, x[0]))
        return out

    # --- the state machine -------------------------------------------------------------------------------
    def step(self) -> Active | None:
        """Advance the state machine; returns the job to mine now (state ready), else None."""
        self._answer_challenges()
        out = self._advance() if self.active is not None else None
        if self.active is None:
            self._pick()
        return out

    def _advance(self) -> Active | None:
        a = self.active
        assert a is not None, "_advance runs only with an active job"
        cs = self.node.chain
        rec = self._job(a.job_id)
        h = cs.height + 1
        if rec is None or not rec.live or h > rec.deadline:
            self._drop("closed, gone or past its deadline")
            return None
        if rec.status == CLAIMED and rec.miner != self.address:
            self._drop("claimed by another miner", retry_at=rec.claim_until(cs.cfg) + 1)
            return None
        if rec.status in (RESULTED, CHALLENGED):
            if rec.miner == self.address:
                self.active = None  # done: our result is on chain
                return None
            self._drop("resulted by another miner")
            return None
        if a.state == "ready":
            return a
        if a.state == "posted":
            if rec.status == OPEN and not self._known_tx(a.claim_txid):
                if self._pending_claim_by_other(a.job_id):
                    return None
                self._post(a, rec, claim=True)  # our claim dropped out (or the job reopened)
            elif rec.status == CLAIMED and not self._known_tx(a.result_txid):
                self._post(a, rec, claim=False)  # claimed by us, result dropped out
        return None

    def on_submit(self) -> None:
        """A submit entered the mempool: when idle, pick (and start fetching) now."""
        if self.active is not None and self.active.state == "posted":
            self._advance()  # our last job may be settled already: free the slot
        if self.active is None:
            self._pick()

    def _drop(self, why: str, retry_at: int | None = None) -> None:
        a = self.active
        if a is None:
            return
        event(log, logging.INFO, "job giving up for now", job=a.job_id.hex()[:16], why=why)
        if a.fetch_task is not None:
            a.fetch_task.cancel()
        h = self.node.chain.height + 1
        self.retry_at[a.job_id] = retry_at if retry_at is not None else h + self.node.cfg.jobs.claim_window
        self.active = None

    def _pick(self) -> None:
        node = self.node
        acct = node.chain.get_account(self.address)
        if node.mempool.by_sender.get(self.address):  # keep nonces simple: our job txs settle first
            return
        for jid, rec in self.candidates():
            if acct.balance < self.bond_for(rec) + 2 * self.tx_fee:
                continue
            if self._pending_claim_by_other(jid):
                continue
            a = Active(jid, "fetching", rec)
            self.active = a
            h_c = self.cached.get((rec.h_a, rec.h_b, rec.m, rec.k, rec.n))
            if h_c is not None and node.blobs.has(h_c):  # a repeated job: C is already here (docs/jobs.md)
                a.result = h_c
                a.state = "posted"
                self.reused += 1
                self._post(a, rec, claim=True)
                return
            event(
                log, logging.INFO, "job fetching operands", job=jid.hex()[:16], m=rec.m, k=rec.k, n=rec.n, fee=rec.fee
            )
            a.fetch_task = asyncio.ensure_future(self._fetch(a, rec))
            return

    async def _fetch(self, a: Active, rec: JobRecord) -> None:
        from pouw.errors import PowError
        from pouw.miner import prepare_job
        import torch

        node = self.node
        try:
            ops = []
            for h, shape in ((rec.h_a, (rec.m, rec.k)), (rec.h_b, (rec.k, rec.n))):
                data = await node.fetch_blob(h)  # stored only if it commits to h (H_A / H_B)
                if data is None:
                    raise BlobError("blob-not-found", f"operand blob {h.hex()[:16]} not available")
                ops.append(decode_array(data, "int8", shape))
            loop = asyncio.get_running_loop()
            prep = await loop.run_in_executor(
                None, prepare_job, torch.from_numpy(ops[0]), torch.from_numpy(ops[1]), node.chain.params
            )
            if prep.job != rec.commitment():
                raise BlobError("bad-blob", "operands do not match the job's H_A / H_B")
        except asyncio.CancelledError:
            raise
        except (BlobError, PowError, ValueError) as e:
            event(log, logging.WARNING, "job operands unusable; not claiming it", job=a.job_id.hex()[:16], why=str(e))
            if self.active is a:
                self._drop(str(e))
            return
        except Exception:
            event(log, logging.ERROR, "job fetching operands failed", exc_info=True, job=a.job_id.hex()[:16])
            if self.active is a:
                self._drop("fetch failed")
            return
        a.prepared = prep
        if self.active is a and a.state == "fetching":
            a.state = "ready"
            self.ready.set()

    def restricted(self, job_id: bytes) -> bool:
        """Does the job's escrow hold allocation, vintage or spend-only tokens (a funding record, at the
        tip or in the pending state its submit leaves)? Their release is free only with a certificate."""
        from chain.economy import k_fund

        cs = self.node.chain
        if cs.get_job(job_id) is not None:
            return cs.get_econ(k_fund(job_id)) is not None
        tx = self.node.mempool.get(job_id)
        if tx is None:
            return False
        return self.node.mempool.pending_state(tx.sender, tx.nonce + 1).get_econ(k_fund(job_id)) is not None

    def certifiable(self, rec: JobRecord) -> bool:
        """This node's passes can certify the job: the template's miner (the mining address) is the claimer
        (this node's key) and a certificate for the shape fits a transaction (chain.workcert)."""
        from chain.workcert import cert_size_bound

        return (
            self.node.mining_address == self.address
            and cert_size_bound(self.node.cfg, rec.m, rec.k, rec.n) <= self.node.cfg.max_tx_bytes
        )

    async def finished(self, a: Active, c) -> None:
        """C computed for `a`: commit, store the blob (served from now on), claim and post the result. A job
        paid with restricted tokens gets the pass's work certificate; a pass without a share is followed by
        another (at most CERT_PASSES in all) before the result goes out without one."""
        loop = asyncio.get_running_loop()
        h_c, data = await loop.run_in_executor(None, commit_c, c, self.cheat)
        await loop.run_in_executor(None, lambda: self.node.blobs.put(data, expect=h_c))
        a.result = h_c
        a.passes += 1
        share, a.share = a.share, None
        if self.restricted(a.job_id) and self.certifiable(a.rec):
            if share is not None:
                a.cert = share
            elif a.passes < CERT_PASSES and self.active is a:
                self.cert_passes += 1
                event(
                    log, logging.INFO, "job pass held no share; another pass", job=a.job_id.hex()[:16], passes=a.passes
                )
                return  # still ready: the miner runs another pass
        a.prepared = None
        a.state = "posted"
        if not self.cheat:
            self.cached[(a.rec.h_a, a.rec.h_b, a.rec.m, a.rec.k, a.rec.n)] = h_c
        if self.active is not a:
            return
        rec = self._job(a.job_id)
        if rec is None or not rec.live:
            self._drop("closed while computing")
            return
        if rec.status == CLAIMED and rec.miner != self.address:
            self._drop("claimed by another miner", retry_at=rec.claim_until(self.node.cfg) + 1)
            return
        self._post(a, rec, claim=rec.status == OPEN)

    def _post(self, a: Active, rec: JobRecord, *, claim: bool) -> None:
        cfg = self.node.cfg
        mp = self.node.mempool
        if claim:
            bond = self.bond_for(rec)
            tx = make_job_claim(self.key, cfg.chain_id, mp.pending_nonce(self.address), a.job_id, bond, self.tx_fee)
            if not self._send(tx):
                self._drop("claim refused")
                return
            a.claim_txid = tx.txid
            self.claims += 1
            event(
                log,
                logging.INFO,
                "job claimed",
                job=a.job_id.hex()[:16],
                m=rec.m,
                k=rec.k,
                n=rec.n,
                fee=rec.fee,
                bond=bond,
            )
        from chain.workcert import CERT_WINDOW

        h_c = a.result
        assert h_c is not None, "a job is posted only after its pass computed C"
        if a.cert is not None and a.cert[1] < self.node.chain.height + 1 - CERT_WINDOW:
            a.cert = None  # too old for the next block: the result goes without
        tx = make_job_result(
            self.key,
            cfg.chain_id,
            mp.pending_nonce(self.address),
            a.job_id,
            h_c,
            h_c,
            self.tx_fee,
            a.cert[0] if a.cert is not None else None,
        )
        sent = self._send(tx)
        if not sent and a.cert is not None:
            a.cert = None  # the certificate no longer applies (e.g. a reorg took its template's prev): without
            tx = make_job_result(
                self.key, cfg.chain_id, mp.pending_nonce(self.address), a.job_id, h_c, h_c, self.tx_fee
            )
            sent = self._send(tx)
        if sent:
            a.result_txid = tx.txid
            if a.job_id not in self.done:
                self.done.append(a.job_id)
            event(log, logging.INFO, "job result posted", job=a.job_id.hex()[:16], cheating=self.cheat)
        else:
            self._drop("result refused")

    # --- data availability -------------------------------------------------------------------------------
    def _answer_challenges(self) -> None:
        cs = self.node.chain
        for jid in list(self.done[-256:]):
            rec = cs.get_job(jid)
            if rec is None or rec.status != CHALLENGED or rec.miner != self.address:
                self.answers.pop(jid, None)
                continue
            if jid in self.answers and self._known_tx(self.answers[jid]):
                continue
            seed = cs.block_hash_at(rec.challenge_height)
            data = self.node.blobs.get(rec.h_c)
            if seed is None or data is None:
                event(log, logging.WARNING, "job challenged but C is not in the store", job=jid.hex()[:16])
                continue
            rows = challenge_rows(seed, jid, rec.m, challenge_row_count(cs.cfg, rec.m, rec.n))
            try:
                opened = answer_rows(data, rows, rec.m, rec.n)
            except BlobError as e:
                event(log, logging.WARNING, "job C blob unusable", job=jid.hex()[:16], why=str(e))
                continue
            tx = make_job_answer(
                self.key, cs.cfg.chain_id, self.node.mempool.pending_nonce(self.address), jid, opened, self.tx_fee
            )
            if self._send(tx):
                self.answers[jid] = tx.txid
                event(log, logging.INFO, "job challenge answered", job=jid.hex()[:16], rows=",".join(map(str, rows)))

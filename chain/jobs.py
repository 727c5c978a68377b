"""Compute jobs settled on chain: job records, the settlement rules and the going-rate price.

Life of a job (docs/jobs.md), heights are block heights, W = claim_window, C = challenge_window:

    submit (height s)  -> open      max fee moved from the client's balance to the job's escrow
    claim  (height c)  -> claimed   bond moved from the miner's balance to the job; exclusive until c + W - 1
    result (height r)  -> resulted  only the claimer, r <= deadline; disputes allowed through r + C
    dispute            -> slashed   accepted fraud proof: escrow and bond go to the client
    end of block r + C -> released  no valid dispute: fee (the escrow) and bond go to the miner
    end of block deadline, no result -> refunded   escrow (and a claimer's bond, forfeited) to the client

A claim after the window lapsed (no result yet) replaces the claimer; the lapsed claimer's bond is
forfeited to the client. Automatic transitions run at the end of a block, after its transactions, for
every live job whose record's ``due`` field equals the block's height (the schedule).

Every function here is pure: it reads a view and returns what changes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Iterable, Protocol

from chain.encoding import Obj, as_bytes, as_int, as_list, decode, encode
from chain.errors import TxError
from chain.hashing import HASH_LEN, ZERO_HASH
from chain.keys import ADDRESS_LEN, ZERO_ADDRESS
from chain.tx import (KIND_JOB_CLAIM, KIND_JOB_DISPUTE, KIND_JOB_RESULT, KIND_JOB_SUBMIT, JobClaim, JobDispute,
                      JobResult, JobSubmit, Transaction)

OPEN, CLAIMED, RESULTED, RELEASED, REFUNDED, SLASHED = range(6)
STATUS_NAMES = ("open", "claimed", "resulted", "released", "refunded", "slashed")
LIVE = frozenset({OPEN, CLAIMED, RESULTED})


@dataclass(frozen=True)
class JobRecord:
    """A job's on-chain record (kept after it closes, so `get_job` answers for settled jobs too).

    Encoding: ``[status, client, h_a, h_b, m, k, n, fee, deadline, blob_a, blob_b, submit_height, miner,
    bond, claim_height, h_c, blob_c, result_height, due, closed_height]``; absent hashes/addresses are
    zero bytes, absent heights 0."""

    status: int
    client: bytes
    h_a: bytes
    h_b: bytes
    m: int
    k: int
    n: int
    fee: int                 # the escrowed max fee (paid in full to the miner on release)
    deadline: int
    blob_a: bytes
    blob_b: bytes
    submit_height: int
    miner: bytes = ZERO_ADDRESS
    bond: int = 0            # the current claimer's bond
    claim_height: int = 0
    h_c: bytes = ZERO_HASH
    blob_c: bytes = ZERO_HASH
    result_height: int = 0
    due: int = 0             # height at whose end the next automatic transition runs; 0 once closed
    closed_height: int = 0

    def to_list(self) -> list[Obj]:
        return [self.status, self.client, self.h_a, self.h_b, self.m, self.k, self.n, self.fee, self.deadline,
                self.blob_a, self.blob_b, self.submit_height, self.miner, self.bond, self.claim_height, self.h_c,
                self.blob_c, self.result_height, self.due, self.closed_height]

    def encode(self) -> bytes:
        return encode(self.to_list())

    @classmethod
    def decode(cls, data: bytes) -> "JobRecord":
        f = as_list(decode(data, max_bytes=1024, max_array=20), 20, what="job")
        h = lambda x: as_bytes(x, HASH_LEN, what="job hash")  # noqa: E731
        a = lambda x: as_bytes(x, ADDRESS_LEN, what="job address")  # noqa: E731
        i = lambda x: as_int(x, what="job int")  # noqa: E731
        return cls(as_int(f[0], 0, len(STATUS_NAMES) - 1, what="job.status"), a(f[1]), h(f[2]), h(f[3]), i(f[4]),
                   i(f[5]), i(f[6]), i(f[7]), i(f[8]), h(f[9]), h(f[10]), i(f[11]), a(f[12]), i(f[13]), i(f[14]),
                   h(f[15]), h(f[16]), i(f[17]), i(f[18]), i(f[19]))

    # --- derived --------------------------------------------------------------------------------------
    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def escrow(self) -> int:
        """Tokens this job holds in escrow now (the max fee while live)."""
        return self.fee if self.status in LIVE else 0

    @property
    def bond_held(self) -> int:
        """Tokens of bond this job holds now (while claimed or resulted)."""
        return self.bond if self.status in (CLAIMED, RESULTED) else 0

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n

    @property
    def fee_per_mac(self) -> Fraction:
        return Fraction(self.fee, max(1, self.macs))

    def commitment(self):
        from pouw.job import JobCommitment
        return JobCommitment(self.h_a, self.h_b, self.m, self.k, self.n)

    def claim_until(self, cfg) -> int:
        """Last height of the current claimer's exclusivity (0 when unclaimed)."""
        return self.claim_height + cfg.jobs.claim_window - 1 if self.status == CLAIMED else 0

    def claimable_at(self, height: int, cfg) -> bool:
        """Would a claim in a block at `height` be accepted by the job rules (bond aside)?"""
        return height <= self.deadline and (
            self.status == OPEN or (self.status == CLAIMED and height > self.claim_until(cfg)))

    def challenge_until(self, cfg) -> int:
        """Last height at which a dispute may be included (0 without a result)."""
        return self.result_height + cfg.jobs.challenge_window if self.result_height else 0

    def to_json(self, job_id: bytes, cfg) -> dict:
        """A JSON-friendly view for the node's API."""
        return {
            "job_id": job_id.hex(), "status": self.status_name, "client": self.client.hex(),
            "h_a": self.h_a.hex(), "h_b": self.h_b.hex(), "m": self.m, "k": self.k, "n": self.n,
            "macs": self.macs, "fee": self.fee, "deadline": self.deadline, "blob_a": self.blob_a.hex(),
            "blob_b": self.blob_b.hex(), "submit_height": self.submit_height,
            "miner": self.miner.hex() if self.miner != ZERO_ADDRESS else None, "bond": self.bond,
            "claim_height": self.claim_height, "claim_until": self.claim_until(cfg),
            "h_c": self.h_c.hex() if self.result_height else None,
            "blob_c": self.blob_c.hex() if self.result_height else None,
            "result_height": self.result_height, "challenge_until": self.challenge_until(cfg),
            "due": self.due, "closed_height": self.closed_height,
            "escrow": self.escrow, "bond_held": self.bond_held,
        }


class JobSource(Protocol):
    """Read access to job state: records by id and the schedule (ids whose ``due`` is a height)."""

    def get_job(self, job_id: bytes) -> JobRecord | None: ...
    def due_jobs(self, height: int) -> Iterable[bytes]: ...


# --- pricing ----------------------------------------------------------------------------------------

def job_price(cfg, m: int, k: int, n: int) -> int:
    """The going-rate fee of an m×k×n job: ceil(m·k·n · rate_num / rate_den) base units, at least 1."""
    j = cfg.jobs
    return max(1, -(-(m * k * n * j.rate_num) // j.rate_den))


def dispute_size_bound(m: int, k: int, n: int) -> int:
    """An upper bound on the encoded size of a dispute transaction against an m×k×n job: row A_i and
    column B_j (k bytes each), row C_i (4n bytes), three Merkle paths, and the transaction envelope."""
    depth = lambda c: max(0, (c - 1).bit_length())  # noqa: E731
    return 2 * k + 4 * n + 34 * (2 * depth(m) + depth(n)) + 256


def check_job_shape(cfg, m: int, k: int, n: int) -> None:
    """Raise TxError unless (m, k, n) is minable on this chain and a fraud proof against it fits a transaction."""
    from pouw.errors import JobError
    p = cfg.pow
    if k < p.min_k or max(m, k, n) > p.max_dim:
        raise TxError("bad-job-shape", f"job shape {m}x{k}x{n} outside limits")
    try:
        p.params().check_shape(m, k, n)
    except JobError as e:
        raise TxError("bad-job-shape", str(e)) from e
    if m * k * n < p.min_job_macs:
        raise TxError("bad-job-size", f"job of {m * k * n} MACs < {p.min_job_macs}")
    if dispute_size_bound(m, k, n) > cfg.max_tx_bytes:
        raise TxError("bad-job-shape", "a fraud proof against this job would not fit in a transaction")


# --- the rules --------------------------------------------------------------------------------------

Credits = list[tuple[bytes, int]]
JobGetter = Callable[[bytes], "JobRecord | None"]


def _known(job: JobGetter, job_id: bytes) -> JobRecord:
    rec = job(job_id)
    if rec is None:
        raise TxError("bad-job-unknown", f"no job {job_id.hex()[:16]}")
    return rec


def job_tx_effects(job: JobGetter, tx: Transaction, height: int, cfg) -> tuple[Credits, dict[bytes, JobRecord]]:
    """Check a job transaction against the job state at `height` (the including block) and return what it
    does besides debiting the sender (amount + fee, nonce): balance credits and new job records.
    Raises TxError with a stable reason; reads only."""
    jc = cfg.jobs
    p = tx.payload
    sender = tx.sender
    if tx.kind == KIND_JOB_SUBMIT:
        assert isinstance(p, JobSubmit)
        check_job_shape(cfg, p.m, p.k, p.n)
        if not height < p.deadline <= height + jc.max_deadline:
            raise TxError("bad-job-deadline", f"deadline {p.deadline} not in ({height}, {height + jc.max_deadline}]")
        if job(tx.txid) is not None:
            raise TxError("bad-job-state", "job id already used")
        rec = JobRecord(OPEN, sender, p.h_a, p.h_b, p.m, p.k, p.n, p.max_fee, p.deadline, p.blob_a, p.blob_b,
                        height, due=p.deadline)
        return [], {tx.txid: rec}
    if tx.kind == KIND_JOB_CLAIM:
        assert isinstance(p, JobClaim)
        rec = _known(job, p.job_id)
        if height > rec.deadline and rec.status in (OPEN, CLAIMED, REFUNDED):
            raise TxError("bad-job-late", f"deadline {rec.deadline} passed")
        if rec.status not in (OPEN, CLAIMED):
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        if rec.status == CLAIMED and height <= rec.claim_until(cfg):
            raise TxError("bad-job-claimed", f"claimed until height {rec.claim_until(cfg)}")
        if p.bond < jc.min_bond:
            raise TxError("bad-job-bond", f"bond {p.bond} < {jc.min_bond}")
        credits: Credits = [(rec.client, rec.bond)] if rec.status == CLAIMED else []  # lapsed bond: forfeited
        new = replace(rec, status=CLAIMED, miner=sender, bond=p.bond, claim_height=height)
        return credits, {p.job_id: new}
    if tx.kind == KIND_JOB_RESULT:
        assert isinstance(p, JobResult)
        rec = _known(job, p.job_id)
        if height > rec.deadline and rec.status in (OPEN, CLAIMED, REFUNDED):
            raise TxError("bad-job-late", f"deadline {rec.deadline} passed")
        if rec.status != CLAIMED:
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        if sender != rec.miner:
            raise TxError("bad-job-not-claimer", "only the claimer may post the result")
        new = replace(rec, status=RESULTED, h_c=p.h_c, blob_c=p.blob_c, result_height=height,
                      due=height + jc.challenge_window)
        return [], {p.job_id: new}
    if tx.kind == KIND_JOB_DISPUTE:
        assert isinstance(p, JobDispute)
        rec = _known(job, p.job_id)
        if rec.status == RELEASED or (rec.status == RESULTED and height > rec.challenge_until(cfg)):
            raise TxError("bad-job-window", f"challenge window closed at height {rec.challenge_until(cfg)}")
        if rec.status != RESULTED:
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        from pouw.errors import PowError
        from pouw.freivalds import verify_fraud_proof
        try:
            verify_fraud_proof(rec.commitment(), rec.h_c, p.proof)
        except PowError as e:
            raise TxError(e.reason, e.detail) from e
        new = replace(rec, status=SLASHED, due=0, closed_height=height)
        return [(rec.client, rec.fee + rec.bond)], {p.job_id: new}
    raise TxError("bad-txn-kind", f"not a job transaction kind {tx.kind}")


def due_effects(job: JobGetter, ids: Iterable[bytes], height: int) -> tuple[Credits, dict[bytes, JobRecord], list]:
    """The automatic transitions at the end of block `height` for the scheduled `ids`: release (resulted:
    fee + bond to the miner) or refund (open/claimed at the deadline: fee, and a claimer's bond, to the
    client). Returns credits, new records and events [(job_id, "released"|"refunded")]."""
    credits: Credits = []
    out: dict[bytes, JobRecord] = {}
    events = []
    for jid in sorted(set(ids)):
        rec = job(jid)
        if rec is None or rec.due != height or not rec.live:
            continue
        if rec.status == RESULTED:
            credits.append((rec.miner, rec.fee + rec.bond))
            out[jid] = replace(rec, status=RELEASED, due=0, closed_height=height)
            events.append((jid, "released"))
        else:
            credits.append((rec.client, rec.fee + rec.bond_held))
            out[jid] = replace(rec, status=REFUNDED, due=0, closed_height=height)
            events.append((jid, "refunded"))
    return credits, out, events

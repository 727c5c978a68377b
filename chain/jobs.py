"""Compute jobs settled on chain: job records, the settlement rules and the going-rate price.

Life of a job (docs/jobs.md), heights are block heights, W = claim_window, C = challenge_window:

    submit (height s)  -> open      max fee moved from the client's balance to the job's escrow
    cancel (client)    -> cancelled an open job's escrow back to the client
    claim  (height c)  -> claimed   bond (>= required_bond) from the miner to the job; exclusive through c + W - 1
    end of block c + W - 1, no result -> open again   the lapsed claimer's bond is forfeited to the client
    result (height r)  -> resulted  only the claimer, r <= deadline; disputes allowed through r + C
    challenge (client, height x <= r + C) -> challenged   the miner must answer by the end of x + R
    answer (height y, x < y <= x + R)    -> resulted      the sampled rows of C opened; disputes through y + C
    end of block x + R, no answer     -> slashed  escrow and bond go to the client
    dispute            -> slashed   accepted fraud proof: escrow and bond go to the client
    end of block r + C -> released  no valid dispute: fee (the escrow) and bond go to the miner
    end of block deadline, no result -> refunded   escrow (and a claimer's bond, forfeited) to the client

Automatic transitions run at the end of a block, after its transactions, for every live job whose
record's ``due`` field equals the block's height (the schedule). R = answer_window.

Every function here is pure: it reads a view and returns what changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from chain.encoding import Obj, RecordMemo, as_bytes, as_int, as_list, cached_encoding, decode, encode_record, evolve
from chain.errors import EncodingError, TxError
from chain.hashing import HASH_LEN, ZERO_HASH, tagged_hash, u32
from chain.keys import ADDRESS_LEN, ZERO_ADDRESS
from chain.tx import (
    KIND_JOB_ANSWER,
    KIND_JOB_CANCEL,
    KIND_JOB_CHALLENGE,
    KIND_JOB_CLAIM,
    KIND_JOB_DISPUTE,
    KIND_JOB_RESULT,
    KIND_JOB_SUBMIT,
    JobAnswer,
    JobClaim,
    JobDispute,
    JobRef,
    JobResult,
    JobSubmit,
    Transaction,
)

if TYPE_CHECKING:  # annotations only
    from chain.config import ChainConfig
    from pouw.job import JobCommitment

OPEN, CLAIMED, RESULTED, RELEASED, REFUNDED, SLASHED, CHALLENGED, CANCELLED = range(8)
STATUS_NAMES = ("open", "claimed", "resulted", "released", "refunded", "slashed", "challenged", "cancelled")
LIVE = frozenset({OPEN, CLAIMED, RESULTED, CHALLENGED})
BONDED = frozenset({CLAIMED, RESULTED, CHALLENGED})
RECORD_FIELDS = 22
_MEMO: RecordMemo["JobRecord"] = RecordMemo()  # job records by their canonical bytes (see RecordMemo)


@dataclass(frozen=True)
class JobRecord:
    """A job's on-chain record (kept after it closes, so `get_job` answers for settled jobs too).

    Encoding: ``[status, client, h_a, h_b, m, k, n, fee, deadline, blob_a, blob_b, submit_height, miner,
    bond, claim_height, h_c, blob_c, result_height, due, closed_height, challenge_height, answer_height]``;
    absent hashes/addresses are zero bytes, absent heights 0. The last two fields are left out of the
    encoding while both are 0 (a job never challenged encodes as 20 fields)."""

    status: int
    client: bytes
    h_a: bytes
    h_b: bytes
    m: int
    k: int
    n: int
    fee: int  # the escrowed max fee (paid in full to the miner on release)
    deadline: int
    blob_a: bytes
    blob_b: bytes
    submit_height: int
    miner: bytes = ZERO_ADDRESS
    bond: int = 0  # the current claimer's bond
    claim_height: int = 0
    h_c: bytes = ZERO_HASH
    blob_c: bytes = ZERO_HASH
    result_height: int = 0
    due: int = 0  # height at whose end the next automatic transition runs; 0 once closed
    closed_height: int = 0
    challenge_height: int = 0  # block that included the client's challenge (its hash seeds the sampled rows)
    answer_height: int = 0  # block that included the answer

    def to_list(self) -> list[Obj]:
        out: list[Obj] = [
            self.status,
            self.client,
            self.h_a,
            self.h_b,
            self.m,
            self.k,
            self.n,
            self.fee,
            self.deadline,
            self.blob_a,
            self.blob_b,
            self.submit_height,
            self.miner,
            self.bond,
            self.claim_height,
            self.h_c,
            self.blob_c,
            self.result_height,
            self.due,
            self.closed_height,
        ]
        if self.challenge_height or self.answer_height:
            out += [self.challenge_height, self.answer_height]
        return out

    def encode(self) -> bytes:
        return cached_encoding(self, lambda: encode_record(self.to_list()))

    @classmethod
    def decode(cls, data: bytes) -> "JobRecord":
        """Strict decode (memoised: a record the transition wrote or read recently is not decoded again)."""
        return _MEMO.decode(data, cls._decode)

    @classmethod
    def _decode(cls, data: bytes) -> "JobRecord":
        f = as_list(decode(data, max_bytes=1024, max_array=RECORD_FIELDS), what="job")
        if len(f) not in (20, RECORD_FIELDS) or (len(f) == RECORD_FIELDS and not (f[20] or f[21])):
            raise EncodingError("bad-encoding", f"job record of {len(f)} fields")
        f = f + [0, 0] if len(f) == 20 else f

        def h(x: Obj) -> bytes:
            return as_bytes(x, HASH_LEN, what="job hash")

        def a(x: Obj) -> bytes:
            return as_bytes(x, ADDRESS_LEN, what="job address")

        def i(x: Obj) -> int:
            return as_int(x, what="job int")

        return cls(
            as_int(f[0], 0, len(STATUS_NAMES) - 1, what="job.status"),
            a(f[1]),
            h(f[2]),
            h(f[3]),
            i(f[4]),
            i(f[5]),
            i(f[6]),
            i(f[7]),
            i(f[8]),
            h(f[9]),
            h(f[10]),
            i(f[11]),
            a(f[12]),
            i(f[13]),
            i(f[14]),
            h(f[15]),
            h(f[16]),
            i(f[17]),
            i(f[18]),
            i(f[19]),
            i(f[20]),
            i(f[21]),
        )

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
        """Tokens of bond this job holds now (while claimed, resulted or challenged)."""
        return self.bond if self.status in BONDED else 0

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n

    @property
    def fee_per_mac(self) -> Fraction:
        return Fraction(self.fee, max(1, self.macs))

    def commitment(self) -> JobCommitment:
        from pouw.job import JobCommitment

        return JobCommitment(self.h_a, self.h_b, self.m, self.k, self.n)

    def claim_until(self, cfg: ChainConfig) -> int:
        """Last height of the current claimer's exclusivity (0 when unclaimed)."""
        return self.claim_height + cfg.jobs.claim_window - 1 if self.status == CLAIMED else 0

    def claimable_at(self, height: int, cfg: ChainConfig) -> bool:
        """Would a claim in a block at `height` be accepted by the job rules (bond aside)? A lapsed claim
        reopens the job at the end of its last exclusive block, so only open jobs are claimable."""
        return height <= self.deadline and self.status == OPEN

    def challenge_until(self, cfg: ChainConfig) -> int:
        """Last height at which a dispute or a challenge may be included (0 without a result): C blocks
        after the result, or after the answer to a challenge."""
        if not self.result_height:
            return 0
        return max(self.result_height, self.answer_height) + cfg.jobs.challenge_window

    def answer_until(self, cfg: ChainConfig) -> int:
        """Last height at which an answer to the challenge may be included (0 without a challenge)."""
        return self.challenge_height + cfg.jobs.answer_window if self.challenge_height else 0

    def to_json(self, job_id: bytes, cfg: ChainConfig) -> dict[str, Any]:
        """A JSON-friendly view for the node's API."""
        return {
            "job_id": job_id.hex(),
            "status": self.status_name,
            "client": self.client.hex(),
            "h_a": self.h_a.hex(),
            "h_b": self.h_b.hex(),
            "m": self.m,
            "k": self.k,
            "n": self.n,
            "macs": self.macs,
            "fee": self.fee,
            "deadline": self.deadline,
            "blob_a": self.blob_a.hex(),
            "blob_b": self.blob_b.hex(),
            "submit_height": self.submit_height,
            "miner": self.miner.hex() if self.miner != ZERO_ADDRESS else None,
            "bond": self.bond,
            "claim_height": self.claim_height,
            "claim_until": self.claim_until(cfg),
            "h_c": self.h_c.hex() if self.result_height else None,
            "blob_c": self.blob_c.hex() if self.result_height else None,
            "result_height": self.result_height,
            "challenge_until": self.challenge_until(cfg),
            "challenge_height": self.challenge_height,
            "answer_until": self.answer_until(cfg),
            "answer_height": self.answer_height,
            "required_bond": required_bond(cfg, self.fee),
            "due": self.due,
            "closed_height": self.closed_height,
            "escrow": self.escrow,
            "bond_held": self.bond_held,
        }


class JobSource(Protocol):
    """Read access to job state: records by id and the schedule (ids whose ``due`` is a height)."""

    def get_job(self, job_id: bytes) -> JobRecord | None: ...
    def due_jobs(self, height: int) -> Iterable[bytes]: ...
    def block_hash_at(self, height: int) -> bytes | None: ...  # the active chain's block at a height


def required_bond(cfg: ChainConfig, fee: int) -> int:
    """The smallest bond a claim on a job of max fee `fee` may post: max(min_bond, ceil(fee·bond_num/bond_den))."""
    j = cfg.jobs
    return max(j.min_bond, -(-(fee * j.bond_num) // j.bond_den))


# --- data availability ------------------------------------------------------------------------------


def challenge_row_count(cfg: ChainConfig, m: int, n: int) -> int:
    """How many rows of C a challenge samples: challenge_rows, at most m, and no more than fit one answer
    transaction (row 4n bytes + its opening each; at least 1, since a fraud proof against the job fits)."""
    depth = max(0, (m - 1).bit_length())
    per_row = 4 * n + 34 * depth + 16
    fit = max(1, (cfg.max_tx_bytes - 256) // per_row)
    return max(1, min(cfg.jobs.challenge_rows, m, fit))


def challenge_rows(seed: bytes, job_id: bytes, m: int, count: int) -> list[int]:
    """The distinct rows of C a challenge samples, in order: a partial Fisher-Yates shuffle of range(m)
    driven by the first 8 bytes (u64 LE) of H("challenge", seed ‖ job_id ‖ u32 t) for t = 0, 1, ...,
    seed = hash of the challenge's block."""
    perm: dict[int, int] = {}
    out = []
    for t in range(min(count, m)):
        r = int.from_bytes(tagged_hash(b"challenge", seed, job_id, u32(t))[:8], "little")
        j = t + r % (m - t)
        perm[t], perm[j] = perm.get(j, j), perm.get(t, t)
        out.append(perm[t])
    return out


# --- pricing ----------------------------------------------------------------------------------------


def job_price(cfg: ChainConfig, m: int, k: int, n: int) -> int:
    """The going-rate fee of an m×k×n job: ceil(m·k·n · rate_num / rate_den) base units, at least 1."""
    j = cfg.jobs
    return max(1, -(-(m * k * n * j.rate_num) // j.rate_den))


def dispute_size_bound(m: int, k: int, n: int) -> int:
    """An upper bound on the encoded size of a dispute transaction against an m×k×n job: row A_i and
    column B_j (k bytes each), row C_i (4n bytes), three Merkle paths, and the transaction envelope."""

    def depth(c: int) -> int:
        return max(0, (c - 1).bit_length())

    return 2 * k + 4 * n + 34 * (2 * depth(m) + depth(n)) + 256


def check_job_shape(cfg: ChainConfig, m: int, k: int, n: int) -> None:
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


def job_tx_effects(
    job: JobGetter,
    tx: Transaction,
    height: int,
    cfg: ChainConfig,
    block_hash: Callable[[int], bytes | None] | None = None,
) -> tuple[Credits, dict[bytes, JobRecord]]:
    """Check a job transaction against the job state at `height` (the including block) and return what it
    does besides debiting the sender (amount + fee, nonce): balance credits and new job records.
    `block_hash(h)` gives the hash of this chain's block at an earlier height (answers need it).
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
        rec = JobRecord(
            OPEN, sender, p.h_a, p.h_b, p.m, p.k, p.n, p.max_fee, p.deadline, p.blob_a, p.blob_b, height, due=p.deadline
        )
        return [], {tx.txid: rec}
    if tx.kind == KIND_JOB_CLAIM:
        assert isinstance(p, JobClaim)
        rec = _known(job, p.job_id)
        if height > rec.deadline and rec.status in (OPEN, CLAIMED, REFUNDED):
            raise TxError("bad-job-late", f"deadline {rec.deadline} passed")
        if rec.status == CLAIMED:
            raise TxError("bad-job-claimed", f"claimed until height {rec.claim_until(cfg)}")
        if rec.status != OPEN:
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        need = required_bond(cfg, rec.fee)
        if p.bond < need:
            raise TxError("bad-job-bond", f"bond {p.bond} < {need} (max(min_bond, fee * {jc.bond_num}/{jc.bond_den}))")
        new = evolve(
            rec,
            status=CLAIMED,
            miner=sender,
            bond=p.bond,
            claim_height=height,
            due=min(rec.deadline, height + jc.claim_window - 1),
        )
        return [], {p.job_id: new}
    if tx.kind == KIND_JOB_RESULT:
        assert isinstance(p, JobResult)
        rec = _known(job, p.job_id)
        if height > rec.deadline and rec.status in (OPEN, CLAIMED, REFUNDED):
            raise TxError("bad-job-late", f"deadline {rec.deadline} passed")
        if rec.status != CLAIMED:
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        if sender != rec.miner:
            raise TxError("bad-job-not-claimer", "only the claimer may post the result")
        new = evolve(
            rec, status=RESULTED, h_c=p.h_c, blob_c=p.blob_c, result_height=height, due=height + jc.challenge_window
        )
        return [], {p.job_id: new}
    if tx.kind == KIND_JOB_CANCEL:
        assert isinstance(p, JobRef)
        rec = _known(job, p.job_id)
        if sender != rec.client:
            raise TxError("bad-job-not-client", "only the job's client may cancel it")
        if rec.status != OPEN:
            raise TxError("bad-job-state", f"job is {rec.status_name}; only an unclaimed job can be cancelled")
        new = evolve(rec, status=CANCELLED, due=0, closed_height=height)
        return [(rec.client, rec.fee)], {p.job_id: new}
    if tx.kind == KIND_JOB_CHALLENGE:
        assert isinstance(p, JobRef)
        rec = _known(job, p.job_id)
        if sender != rec.client:
            raise TxError("bad-job-not-client", "only the job's client may challenge its result")
        if rec.challenge_height:
            raise TxError("bad-job-challenged", f"already challenged at height {rec.challenge_height}")
        if rec.status == RELEASED:
            raise TxError("bad-job-window", f"challenge window closed at height {rec.challenge_until(cfg)}")
        if rec.status != RESULTED:
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        new = evolve(rec, status=CHALLENGED, challenge_height=height, due=height + jc.answer_window)
        return [], {p.job_id: new}
    if tx.kind == KIND_JOB_ANSWER:
        assert isinstance(p, JobAnswer)
        rec = _known(job, p.job_id)
        if rec.status != CHALLENGED:
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        seed = block_hash(rec.challenge_height) if block_hash is not None and height > rec.challenge_height else None
        if seed is None:
            raise TxError("bad-answer-early", "an answer goes in a block after the challenge's block")
        want = challenge_rows(seed, p.job_id, rec.m, challenge_row_count(cfg, rec.m, rec.n))
        if [r.i for r in p.rows] != want:
            raise TxError("bad-answer-rows", f"the challenge sampled rows {want}")
        from pouw.commit import TAG_C
        from pouw.errors import PowError
        from pouw.merkle import verify_range

        for r in p.rows:
            try:
                verify_range(TAG_C, rec.h_c, rec.m, 4 * rec.n, r.i, [r.c_row], r.path, "bad-answer-merkle")
            except PowError as e:
                raise TxError(e.reason, f"row {r.i}: {e.detail}") from e
        new = evolve(rec, status=RESULTED, answer_height=height, due=height + jc.challenge_window)
        return [], {p.job_id: new}
    if tx.kind == KIND_JOB_DISPUTE:
        assert isinstance(p, JobDispute)
        rec = _known(job, p.job_id)
        if rec.status == RELEASED or (rec.status == RESULTED and height > rec.challenge_until(cfg)):
            raise TxError("bad-job-window", f"challenge window closed at height {rec.challenge_until(cfg)}")
        if rec.status not in (RESULTED, CHALLENGED):
            raise TxError("bad-job-state", f"job is {rec.status_name}")
        from pouw.errors import PowError
        from pouw.freivalds import verify_fraud_proof

        try:
            verify_fraud_proof(rec.commitment(), rec.h_c, p.proof)
        except PowError as e:
            raise TxError(e.reason, e.detail) from e
        new = evolve(rec, status=SLASHED, due=0, closed_height=height)
        return [(rec.client, rec.fee + rec.bond)], {p.job_id: new}
    raise TxError("bad-txn-kind", f"not a job transaction kind {tx.kind}")


def due_effects(
    job: JobGetter, ids: Iterable[bytes], height: int
) -> tuple[Credits, dict[bytes, JobRecord], list[tuple[bytes, str]]]:
    """The automatic transitions at the end of block `height` for the scheduled `ids`: release (resulted:
    fee + bond to the miner), slash (challenged and unanswered: fee + bond to the client), reopen (a claim
    whose exclusivity ends here before the deadline: its bond to the client, the job open again) or
    refund (open/claimed at the deadline: fee, and a claimer's bond, to the client).
    Returns credits, new records and events [(job_id, "released"|"slashed"|"reopened"|"refunded")]."""
    credits: Credits = []
    out: dict[bytes, JobRecord] = {}
    events: list[tuple[bytes, str]] = []
    for jid in sorted(set(ids)):
        rec = job(jid)
        if rec is None or rec.due != height or not rec.live:
            continue
        if rec.status == RESULTED:
            credits.append((rec.miner, rec.fee + rec.bond))
            out[jid] = evolve(rec, status=RELEASED, due=0, closed_height=height)
            events.append((jid, "released"))
        elif rec.status == CHALLENGED:
            credits.append((rec.client, rec.fee + rec.bond))
            out[jid] = evolve(rec, status=SLASHED, due=0, closed_height=height)
            events.append((jid, "slashed"))
        elif rec.status == CLAIMED and height < rec.deadline:
            credits.append((rec.client, rec.bond))
            out[jid] = evolve(rec, status=OPEN, miner=ZERO_ADDRESS, bond=0, claim_height=0, due=rec.deadline)
            events.append((jid, "reopened"))
        else:
            credits.append((rec.client, rec.fee + rec.bond_held))
            out[jid] = evolve(rec, status=REFUNDED, due=0, closed_height=height)
            events.append((jid, "refunded"))
    return credits, out, events

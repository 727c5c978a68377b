"""Transactions.

Encoding (msgpack array, fixed order)::

    tx       = [kind, chain_id, nonce, sender_pubkey(32), fee, payload, signature(64)]
    payload  = transfer:    [recipient(20), amount]                                          (kind 0)
               job submit:  [h_a(32), h_b(32), m, k, n, max_fee, deadline, blob_a(32), blob_b(32)] (kind 1)
               job result:  [job_id(32), h_c(32), blob_c(32) (, [template, tile_proof])]        (kind 2)
               job dispute: [job_id(32), [i, j, a_row, b_col, c_row, [path_a], [path_b], [path_c]]] (kind 3)
               job claim:   [job_id(32), bond]                                                 (kind 6)
               job challenge: [job_id(32)]                                                     (kind 7)
               job answer:  [job_id(32), [[i, c_row, [path_c]], ...]]                          (kind 8)
               job cancel:  [job_id(32)]                                                       (kind 9)

- ``sighash = H("tx-sig", encode([kind, chain_id, nonce, sender_pubkey, fee, payload]))``
  is what the sender signs; the chain id and nonce in it give replay protection across chains and
  within a chain.
- ``txid = sighash`` (independent of the signature bytes); the block's transaction root commits to
  the full encoding, signature included.
- Unknown kinds decode (so the reason is reported) but are rejected with ``bad-txn-kind``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from chain.encoding import Obj, as_bytes, as_int, as_list, decode, encode
from chain.errors import EncodingError, TxError
from chain.hashing import HASH_LEN, tagged_hash
from chain.keys import ADDRESS_LEN, PUBKEY_LEN, SIG_LEN, PrivateKey, address_of, verify_sig
from chain.econtx import ECON_KINDS, check_econ_payload, decode_econ_payload  # economy kinds (docs/economy.md)

if TYPE_CHECKING:  # annotations only: pouw.freivalds is imported where a dispute is decoded
    from pouw.freivalds import FraudProof
    from pouw.job import JobCommitment

KIND_TRANSFER = 0
KIND_JOB_SUBMIT = 1
KIND_JOB_RESULT = 2
KIND_JOB_DISPUTE = 3
# The market's kinds (chain/econtx.py holds the economy's payloads: kinds 4, 5 and 10-19).
KIND_ORDER_PLACE = 4
KIND_ORDER_CANCEL = 5
KIND_JOB_CLAIM = 6
KIND_JOB_CHALLENGE = 7  # the client asks the miner to open sampled rows of C on chain (data availability)
KIND_JOB_ANSWER = 8  # the sampled rows of C with their openings against H_C
KIND_JOB_CANCEL = 9  # the client withdraws an unclaimed job (escrow refunded)
JOB_KINDS = frozenset(
    {
        KIND_JOB_SUBMIT,
        KIND_JOB_CLAIM,
        KIND_JOB_RESULT,
        KIND_JOB_DISPUTE,
        KIND_JOB_CHALLENGE,
        KIND_JOB_ANSWER,
        KIND_JOB_CANCEL,
    }
)
KNOWN_KINDS = frozenset({KIND_TRANSFER}) | JOB_KINDS | ECON_KINDS

MAX_MONEY = (1 << 63) - 1


@dataclass(frozen=True)
class Transfer:
    recipient: bytes
    amount: int

    def to_list(self) -> list[Obj]:
        return [self.recipient, self.amount]


@dataclass(frozen=True)
class JobSubmit:
    """A client's job: commitments to A (rows) and B (columns), the shape, the escrowed max fee, the
    deadline height and the content addresses of the operand blobs. job_id = txid."""

    h_a: bytes
    h_b: bytes
    m: int
    k: int
    n: int
    max_fee: int
    deadline: int
    blob_a: bytes
    blob_b: bytes

    def to_list(self) -> list[Obj]:
        return [self.h_a, self.h_b, self.m, self.k, self.n, self.max_fee, self.deadline, self.blob_a, self.blob_b]

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n

    def commitment(self) -> JobCommitment:
        from pouw.job import JobCommitment

        return JobCommitment(self.h_a, self.h_b, self.m, self.k, self.n)


@dataclass(frozen=True)
class JobClaim:
    job_id: bytes
    bond: int

    def to_list(self) -> list[Obj]:
        return [self.job_id, self.bond]


MAX_CERT_TEMPLATE = 1024  # bytes of a work certificate's header template (a header without proof is ~300)


@dataclass(frozen=True)
class WorkCert:
    """A result's work certificate (docs/jobs.md): the header template the miner's pass ran under
    (header.job = the job's commitment, header.miner = the claimer, prev = a recent block of this chain)
    and a share of that pass (a pouw.proof.TileProof whose ticket is below pouw.share's threshold)."""

    template: bytes
    proof: bytes

    def to_list(self) -> list[Obj]:
        return [self.template, self.proof]


@dataclass(frozen=True)
class JobResult:
    """H_C, the result blob's address, and optionally a work certificate (a 4th payload field, written
    only when present: a result without one encodes as before)."""

    job_id: bytes
    h_c: bytes
    blob_c: bytes
    cert: WorkCert | None = None

    def to_list(self) -> list[Obj]:
        out: list[Obj] = [self.job_id, self.h_c, self.blob_c]
        if self.cert is not None:
            out.append(self.cert.to_list())
        return out


@dataclass(frozen=True)
class JobDispute:
    job_id: bytes
    proof: FraudProof

    def to_list(self) -> list[Obj]:
        return [self.job_id, self.proof.to_list()]


@dataclass(frozen=True)
class JobRef:
    """A payload that only names a job: challenge (kind 7) and cancel (kind 9)."""

    job_id: bytes

    def to_list(self) -> list[Obj]:
        return [self.job_id]


@dataclass(frozen=True)
class AnsweredRow:
    i: int
    c_row: bytes  # n int32 little-endian
    path: tuple[bytes, ...]  # opening of row i against H_C

    def to_list(self) -> list[Obj]:
        return [self.i, self.c_row, list(self.path)]


@dataclass(frozen=True)
class JobAnswer:
    """The rows of C a challenge sampled (`chain.jobs.challenge_rows`), in that order, with openings."""

    job_id: bytes
    rows: tuple[AnsweredRow, ...]

    def to_list(self) -> list[Obj]:
        return [self.job_id, [r.to_list() for r in self.rows]]


def _hash32(x: Obj, what: str) -> bytes:
    return as_bytes(x, HASH_LEN, what=what)


def _decode_payload(kind: int, payload: Obj) -> Obj:
    if kind == KIND_TRANSFER:
        p = as_list(payload, 2, what="transfer")
        return Transfer(as_bytes(p[0], ADDRESS_LEN, what="transfer.recipient"), as_int(p[1], what="transfer.amount"))
    if kind == KIND_JOB_SUBMIT:
        p = as_list(payload, 9, what="job_submit")
        return JobSubmit(
            _hash32(p[0], "submit.h_a"),
            _hash32(p[1], "submit.h_b"),
            as_int(p[2], 0, 1 << 32, what="submit.m"),
            as_int(p[3], 0, 1 << 32, what="submit.k"),
            as_int(p[4], 0, 1 << 32, what="submit.n"),
            as_int(p[5], what="submit.max_fee"),
            as_int(p[6], what="submit.deadline"),
            _hash32(p[7], "submit.blob_a"),
            _hash32(p[8], "submit.blob_b"),
        )
    if kind == KIND_JOB_CLAIM:
        p = as_list(payload, 2, what="job_claim")
        return JobClaim(_hash32(p[0], "claim.job_id"), as_int(p[1], what="claim.bond"))
    if kind == KIND_JOB_RESULT:
        p = as_list(payload, what="job_result")
        if len(p) not in (3, 4):
            raise EncodingError("bad-encoding", f"job_result of {len(p)} fields")
        cert = None
        if len(p) == 4:
            c = as_list(p[3], 2, what="result.cert")
            cert = WorkCert(
                as_bytes(c[0], max_len=MAX_CERT_TEMPLATE, what="cert.template"), as_bytes(c[1], what="cert.proof")
            )
        return JobResult(
            _hash32(p[0], "result.job_id"), _hash32(p[1], "result.h_c"), _hash32(p[2], "result.blob_c"), cert
        )
    if kind == KIND_JOB_DISPUTE:
        from pouw.freivalds import FraudProof

        p = as_list(payload, 2, what="job_dispute")
        f = as_list(p[1], 8, what="fraud_proof")
        paths = tuple(
            tuple(_hash32(h, "fraud_proof.path") for h in as_list(x, what="fraud_proof.path")) for x in f[5:8]
        )
        proof = FraudProof(
            as_int(f[0], 0, 1 << 32, what="fraud.i"),
            as_int(f[1], 0, 1 << 32, what="fraud.j"),
            as_bytes(f[2], what="fraud.a_row"),
            as_bytes(f[3], what="fraud.b_col"),
            as_bytes(f[4], what="fraud.c_row"),
            *paths,
        )
        return JobDispute(_hash32(p[0], "dispute.job_id"), proof)
    if kind in (KIND_JOB_CHALLENGE, KIND_JOB_CANCEL):
        p = as_list(payload, 1, what="job_ref")
        return JobRef(_hash32(p[0], "job_ref.job_id"))
    if kind == KIND_JOB_ANSWER:
        p = as_list(payload, 2, what="job_answer")
        rows = []
        for r in as_list(p[1], what="answer.rows"):
            f = as_list(r, 3, what="answer.row")
            rows.append(
                AnsweredRow(
                    as_int(f[0], 0, 1 << 32, what="answer.i"),
                    as_bytes(f[1], what="answer.c_row"),
                    tuple(_hash32(h, "answer.path") for h in as_list(f[2], what="answer.path")),
                )
            )
        return JobAnswer(_hash32(p[0], "answer.job_id"), tuple(rows))
    if kind in ECON_KINDS:
        return decode_econ_payload(kind, payload)
    return payload


@dataclass(frozen=True)
class Transaction:
    kind: int
    chain_id: int
    nonce: int
    sender_pubkey: bytes
    fee: int
    payload: Obj  # Transfer / JobSubmit / JobClaim / JobResult / JobDispute / JobRef / JobAnswer; raw decoded object for unknown kinds
    signature: bytes = b""

    # --- encoding ---------------------------------------------------------------------------------
    def _payload_obj(self) -> Obj:
        return self.payload.to_list() if hasattr(self.payload, "to_list") else self.payload

    def unsigned_list(self) -> list[Obj]:
        return [self.kind, self.chain_id, self.nonce, self.sender_pubkey, self.fee, self._payload_obj()]

    def to_list(self) -> list[Obj]:
        return self.unsigned_list() + [self.signature]

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_list())

    @cached_property
    def sighash(self) -> bytes:
        return tagged_hash(b"tx-sig", encode(self.unsigned_list()))

    @property
    def txid(self) -> bytes:
        return self.sighash

    @cached_property
    def sender(self) -> bytes:
        return address_of(self.sender_pubkey)

    @property
    def amount(self) -> int:
        """What the transaction takes from the sender's balance besides the fee: the transfer amount,
        the escrowed max fee of a job submit, or the bond of a claim."""
        p = self.payload
        if isinstance(p, Transfer):
            return p.amount
        if isinstance(p, JobSubmit):
            return p.max_fee
        if isinstance(p, JobClaim):
            return p.bond
        return getattr(p, "debit", 0)  # economy payloads: what they take from the free balance

    def signed(self, key: PrivateKey) -> "Transaction":
        if key.pubkey != self.sender_pubkey:
            raise ValueError("key does not match sender_pubkey")
        return Transaction(
            self.kind, self.chain_id, self.nonce, self.sender_pubkey, self.fee, self.payload, key.sign(self.sighash)
        )

    @classmethod
    def from_list(cls, obj: Obj) -> "Transaction":
        f = as_list(obj, 7, what="tx")
        kind = as_int(f[0], what="tx.kind")
        chain_id = as_int(f[1], what="tx.chain_id")
        nonce = as_int(f[2], what="tx.nonce")
        pub = as_bytes(f[3], PUBKEY_LEN, what="tx.sender_pubkey")
        fee = as_int(f[4], what="tx.fee")
        sig = as_bytes(f[6], SIG_LEN, what="tx.signature")
        payload = _decode_payload(kind, f[5])
        return cls(kind, chain_id, nonce, pub, fee, payload, sig)

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = 4096) -> "Transaction":
        return cls.from_list(decode(data, max_bytes=max_bytes, max_array=16))


def make_transfer(
    key: PrivateKey, chain_id: int, nonce: int, recipient: bytes, amount: int, fee: int = 0
) -> Transaction:
    """A signed transfer of `amount` from key's address to `recipient`."""
    return Transaction(KIND_TRANSFER, chain_id, nonce, key.pubkey, fee, Transfer(recipient, amount)).signed(key)


def make_job_submit(
    key: PrivateKey,
    chain_id: int,
    nonce: int,
    job: JobCommitment,
    max_fee: int,
    deadline: int,
    blob_a: bytes,
    blob_b: bytes,
    fee: int = 0,
) -> Transaction:
    """A signed job submit of the job `job` commits to;
    `max_fee` is escrowed from the sender; the job's id is the returned transaction's txid."""
    p = JobSubmit(job.h_a, job.h_b, job.m, job.k, job.n, max_fee, deadline, blob_a, blob_b)
    return Transaction(KIND_JOB_SUBMIT, chain_id, nonce, key.pubkey, fee, p).signed(key)


def make_job_claim(key: PrivateKey, chain_id: int, nonce: int, job_id: bytes, bond: int, fee: int = 0) -> Transaction:
    """A signed claim of job `job_id`, posting `bond` (moved from the sender's balance to the job)."""
    return Transaction(KIND_JOB_CLAIM, chain_id, nonce, key.pubkey, fee, JobClaim(job_id, bond)).signed(key)


def make_job_result(
    key: PrivateKey,
    chain_id: int,
    nonce: int,
    job_id: bytes,
    h_c: bytes,
    blob_c: bytes,
    fee: int = 0,
    cert: WorkCert | None = None,
) -> Transaction:
    """A signed result: H_C (pouw.commit.commit_result of the exact int32 C), the C blob's hash and
    optionally a work certificate (`WorkCert(header.template, tile_proof.encode())`)."""
    return Transaction(KIND_JOB_RESULT, chain_id, nonce, key.pubkey, fee, JobResult(job_id, h_c, blob_c, cert)).signed(
        key
    )


def make_job_dispute(
    key: PrivateKey, chain_id: int, nonce: int, job_id: bytes, proof: FraudProof, fee: int = 0
) -> Transaction:
    """A signed dispute carrying a pouw.freivalds.FraudProof against the job's posted H_C."""
    return Transaction(KIND_JOB_DISPUTE, chain_id, nonce, key.pubkey, fee, JobDispute(job_id, proof)).signed(key)


def make_job_challenge(key: PrivateKey, chain_id: int, nonce: int, job_id: bytes, fee: int = 0) -> Transaction:
    """A signed data-availability challenge by the job's client (docs/jobs.md)."""
    return Transaction(KIND_JOB_CHALLENGE, chain_id, nonce, key.pubkey, fee, JobRef(job_id)).signed(key)


def make_job_answer(
    key: PrivateKey,
    chain_id: int,
    nonce: int,
    job_id: bytes,
    rows: Iterable[AnsweredRow | tuple[int, bytes, Iterable[bytes]]],
    fee: int = 0,
) -> Transaction:
    """A signed answer to a challenge: `rows` are AnsweredRow (or (i, c_row, path) triples) in sampled order."""
    rs = tuple(r if isinstance(r, AnsweredRow) else AnsweredRow(r[0], r[1], tuple(r[2])) for r in rows)
    return Transaction(KIND_JOB_ANSWER, chain_id, nonce, key.pubkey, fee, JobAnswer(job_id, rs)).signed(key)


def make_job_cancel(key: PrivateKey, chain_id: int, nonce: int, job_id: bytes, fee: int = 0) -> Transaction:
    """A signed cancel of the sender's own unclaimed job: the escrow goes back to the client."""
    return Transaction(KIND_JOB_CANCEL, chain_id, nonce, key.pubkey, fee, JobRef(job_id)).signed(key)


# --- context-free checks (the "sanity" layer for one transaction) -----------------------------------


def check_tx(tx: Transaction, chain_id: int, max_tx_bytes: int, *, check_sig: bool = True) -> None:
    """Raise TxError(reason) unless tx is well formed for this chain: known kind, chain id, ranges,
    size, and a valid signature. Does not look at state."""
    if tx.kind not in KNOWN_KINDS:
        raise TxError("bad-txn-kind", f"unknown transaction kind {tx.kind}")
    if tx.chain_id != chain_id:
        raise TxError("bad-txn-chainid", f"chain id {tx.chain_id} != {chain_id}")
    if len(tx.encoded) > max_tx_bytes:
        raise TxError("bad-txn-size", f"{len(tx.encoded)} bytes > {max_tx_bytes}")
    if not 0 <= tx.fee <= MAX_MONEY:
        raise TxError("bad-txn-fee", "fee out of range")
    if tx.kind == KIND_TRANSFER:
        p = tx.payload
        if not 0 < p.amount <= MAX_MONEY or p.amount + tx.fee > MAX_MONEY:
            raise TxError("bad-txn-amount", "amount out of range")
    elif tx.kind == KIND_JOB_SUBMIT:
        if not 0 < tx.payload.max_fee <= MAX_MONEY or tx.payload.max_fee + tx.fee > MAX_MONEY:
            raise TxError("bad-job-fee", "max fee out of range")
        if tx.payload.blob_a != tx.payload.h_a or tx.payload.blob_b != tx.payload.h_b:
            raise TxError("bad-job-blob", "an operand blob's address is its commitment (blob_a = h_a, blob_b = h_b)")
    elif tx.kind == KIND_JOB_RESULT:
        if tx.payload.blob_c != tx.payload.h_c:
            raise TxError("bad-job-blob", "the result blob's address is its commitment (blob_c = h_c)")
        if tx.payload.cert is not None:
            from pouw.errors import PowError
            from pouw.proof import TileProof

            try:
                TileProof.decode(tx.payload.cert.proof)
            except PowError as e:
                raise TxError("bad-cert-encoding", e.detail) from e
    elif tx.kind == KIND_JOB_CLAIM:
        if not 0 < tx.payload.bond <= MAX_MONEY or tx.payload.bond + tx.fee > MAX_MONEY:
            raise TxError("bad-job-bond", "bond out of range")
    elif tx.kind in ECON_KINDS:
        check_econ_payload(tx.kind, tx.payload)
    if check_sig and not verify_sig(tx.sender_pubkey, tx.sighash, tx.signature):
        raise TxError("bad-txn-sig", "signature does not verify")


def decode_tx(data: bytes, max_tx_bytes: int) -> Transaction:
    """Decode a standalone transaction (e.g. from a peer); bad bytes raise EncodingError('bad-txn-encoding')."""
    try:
        return Transaction.decode(data, max_tx_bytes)
    except EncodingError as e:
        raise EncodingError("bad-txn-encoding", e.detail) from e

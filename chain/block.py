"""Block headers and blocks.

Encoding (msgpack arrays, fixed order)::

    header = [version, chain_id, height, prev_hash(32), timestamp, target(32, big-endian),
              tx_root(32), state_root(32), miner(20), job=[h_a(32), h_b(32), m, k, n], nonce(u64),
              proof(bytes)]
    block  = [header, [tx, ...]]

- ``template = encode(header[:-1])`` (the header without its proof) is what the useful-work proof
  binds to: it contains the job commitment, so the noise depends on the job and on the block, and the
  nonce, so a new nonce is a new attempt (new noise) over the same operands and commitments.
- ``block hash = H("block", encode(header))`` (chain/hashing.py) (proof bytes included).
- The miner (coinbase) address receives subsidy + fees; there is no coinbase transaction.
- Genesis: height 0, prev = 32 zero bytes, job = zeros with shape (0, 0, 0), nonce 0, empty proof.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from chain.encoding import Obj, as_bytes, as_int, as_list, decode, encode
from chain.errors import EncodingError
from chain.hashing import HASH_LEN, ZERO_HASH, merkle_root, tagged_hash
from chain.keys import ADDRESS_LEN
from chain.tx import Transaction
from pouw.job import JobCommitment


def job_from_list(obj: Obj) -> JobCommitment:
    """Strict decoding of a header's job = [h_a(32), h_b(32), m, k, n] (each dimension at most 2^32). The
    header's job is pouw's JobCommitment itself: one type for the chain and the useful-work protocol."""
    f = as_list(obj, 5, what="job")
    return JobCommitment(
        as_bytes(f[0], HASH_LEN, what="job.h_a"),
        as_bytes(f[1], HASH_LEN, what="job.h_b"),
        as_int(f[2], 0, 1 << 32, what="job.m"),
        as_int(f[3], 0, 1 << 32, what="job.k"),
        as_int(f[4], 0, 1 << 32, what="job.n"),
    )


NULL_JOB = JobCommitment(ZERO_HASH, ZERO_HASH, 0, 0, 0)


@dataclass(frozen=True)
class Header:
    version: int
    chain_id: int
    height: int
    prev_hash: bytes
    timestamp: int
    target: int
    tx_root: bytes
    state_root: bytes
    miner: bytes
    job: JobCommitment
    nonce: int = 0
    proof: bytes = b""

    def template_list(self) -> list[Obj]:
        return [
            self.version,
            self.chain_id,
            self.height,
            self.prev_hash,
            self.timestamp,
            self.target.to_bytes(32, "big"),
            self.tx_root,
            self.state_root,
            self.miner,
            self.job.to_list(),
            self.nonce,
        ]

    def to_list(self) -> list[Obj]:
        return self.template_list() + [self.proof]

    @cached_property
    def template(self) -> bytes:
        """Canonical encoding of the header without its proof: what the proof binds to."""
        return encode(self.template_list())

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_list())

    @cached_property
    def hash(self) -> bytes:
        return tagged_hash(b"block", self.encoded)

    def with_proof(self, proof: bytes) -> "Header":
        return replace(self, proof=proof)

    @classmethod
    def from_list(cls, obj: Obj, max_proof: int = 1 << 24) -> "Header":
        f = as_list(obj, 12, what="header")
        target_b = as_bytes(f[5], 32, what="header.target")
        return cls(
            version=as_int(f[0], what="header.version"),
            chain_id=as_int(f[1], what="header.chain_id"),
            height=as_int(f[2], what="header.height"),
            prev_hash=as_bytes(f[3], HASH_LEN, what="header.prev"),
            timestamp=as_int(f[4], what="header.timestamp"),
            target=int.from_bytes(target_b, "big"),
            tx_root=as_bytes(f[6], HASH_LEN, what="header.tx_root"),
            state_root=as_bytes(f[7], HASH_LEN, what="header.state_root"),
            miner=as_bytes(f[8], ADDRESS_LEN, what="header.miner"),
            job=job_from_list(f[9]),
            nonce=as_int(f[10], what="header.nonce"),
            proof=as_bytes(f[11], max_len=max_proof, what="header.proof"),
        )

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = 1 << 24) -> "Header":
        try:
            return cls.from_list(decode(data, max_bytes=max_bytes, max_array=16), max_bytes)
        except EncodingError as e:
            raise EncodingError("bad-header-encoding", e.detail) from e


def tx_root(txs: list[Transaction]) -> bytes:
    return merkle_root([t.encoded for t in txs])


@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[Transaction, ...] = ()

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_list(self) -> list[Obj]:
        return [self.header.to_list(), [t.to_list() for t in self.txs]]

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_list())

    @cached_property
    def body_encoded(self) -> bytes:
        return encode([t.to_list() for t in self.txs])

    @classmethod
    def from_parts(cls, header: Header, body: bytes, max_txs: int = 1 << 16) -> "Block":
        obj = decode(body, max_bytes=len(body), max_array=max(max_txs, 16))
        return cls(header, tuple(Transaction.from_list(t) for t in as_list(obj, what="body")))

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = 1 << 24, max_txs: int = 1 << 16) -> "Block":
        """Strict decode; any malformed or non-canonical input raises EncodingError('bad-blk-encoding')."""
        try:
            obj = decode(data, max_bytes=max_bytes, max_array=max(max_txs, 16))
            f = as_list(obj, 2, what="block")
            header = Header.from_list(f[0], max_bytes)
            txs = as_list(f[1], what="block.txs")
            if len(txs) > max_txs:
                raise EncodingError("bad-blk-length", f"{len(txs)} transactions > {max_txs}")
            return cls(header, tuple(Transaction.from_list(t) for t in txs))
        except EncodingError as e:
            if e.reason != "bad-encoding":
                raise
            raise EncodingError("bad-blk-encoding", e.detail) from e

"""Transactions.

Encoding (msgpack array, fixed order)::

    tx       = [kind, chain_id, nonce, sender_pubkey(32), fee, payload, signature(64)]
    payload  = transfer: [recipient(20), amount]

- ``sighash = tagged_hash("pouw/tx-sig", encode([kind, chain_id, nonce, sender_pubkey, fee, payload]))``
  is what the sender signs; the chain id and nonce in it give replay protection across chains and
  within a chain.
- ``txid = sighash`` (independent of the signature bytes); the block's transaction root commits to
  the full encoding, signature included.
- Unknown kinds decode (so the reason is reported) but are rejected with ``bad-txn-kind``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from chain.encoding import Obj, as_bytes, as_int, as_list, decode, encode
from chain.errors import EncodingError, TxError
from chain.hashing import tagged_hash
from chain.keys import ADDRESS_LEN, PUBKEY_LEN, SIG_LEN, PrivateKey, address_of, verify_sig

KIND_TRANSFER = 0
# Reserved for the next issues (job settlement and market); rejected as unknown until implemented.
KIND_JOB_SUBMIT = 1
KIND_JOB_RESULT = 2
KIND_JOB_DISPUTE = 3
KIND_ORDER_PLACE = 4
KIND_ORDER_CANCEL = 5
KNOWN_KINDS = frozenset({KIND_TRANSFER})

MAX_MONEY = (1 << 63) - 1


@dataclass(frozen=True)
class Transfer:
    recipient: bytes
    amount: int

    def to_list(self) -> list[Obj]:
        return [self.recipient, self.amount]


@dataclass(frozen=True)
class Transaction:
    kind: int
    chain_id: int
    nonce: int
    sender_pubkey: bytes
    fee: int
    payload: Obj  # Transfer for KIND_TRANSFER; raw decoded object for other kinds
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
        return tagged_hash(b"pouw/tx-sig", encode(self.unsigned_list()))

    @property
    def txid(self) -> bytes:
        return self.sighash

    @cached_property
    def sender(self) -> bytes:
        return address_of(self.sender_pubkey)

    @property
    def amount(self) -> int:
        return self.payload.amount if isinstance(self.payload, Transfer) else 0

    def signed(self, key: PrivateKey) -> "Transaction":
        if key.pubkey != self.sender_pubkey:
            raise ValueError("key does not match sender_pubkey")
        return Transaction(self.kind, self.chain_id, self.nonce, self.sender_pubkey, self.fee, self.payload,
                           key.sign(self.sighash))

    @classmethod
    def from_list(cls, obj: Obj) -> "Transaction":
        f = as_list(obj, 7, what="tx")
        kind = as_int(f[0], what="tx.kind")
        chain_id = as_int(f[1], what="tx.chain_id")
        nonce = as_int(f[2], what="tx.nonce")
        pub = as_bytes(f[3], PUBKEY_LEN, what="tx.sender_pubkey")
        fee = as_int(f[4], what="tx.fee")
        sig = as_bytes(f[6], SIG_LEN, what="tx.signature")
        payload: Obj = f[5]
        if kind == KIND_TRANSFER:
            p = as_list(payload, 2, what="transfer")
            payload = Transfer(as_bytes(p[0], ADDRESS_LEN, what="transfer.recipient"),
                               as_int(p[1], what="transfer.amount"))
        return cls(kind, chain_id, nonce, pub, fee, payload, sig)

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = 4096) -> "Transaction":
        return cls.from_list(decode(data, max_bytes=max_bytes, max_array=16))


def make_transfer(key: PrivateKey, chain_id: int, nonce: int, recipient: bytes, amount: int, fee: int = 0) -> Transaction:
    """A signed transfer of `amount` from key's address to `recipient`."""
    return Transaction(KIND_TRANSFER, chain_id, nonce, key.pubkey, fee, Transfer(recipient, amount)).signed(key)


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
    if check_sig and not verify_sig(tx.sender_pubkey, tx.sighash, tx.signature):
        raise TxError("bad-txn-sig", "signature does not verify")


def decode_tx(data: bytes, max_tx_bytes: int) -> Transaction:
    """Decode a standalone transaction (e.g. from a peer); bad bytes raise EncodingError('bad-txn-encoding')."""
    try:
        return Transaction.decode(data, max_tx_bytes)
    except EncodingError as e:
        raise EncodingError("bad-txn-encoding", e.detail) from e

"""Account state, the state commitment, and the state transition as short pure functions.

- An account is ``(balance, nonce)``; the all-zero account is "absent" and is not committed.
- State commitment: an LtHash (lattice homomorphic multiset hash, 1024 lanes of uint16) over
  ``shake_256("pouw/acct" ‖ address ‖ encode([balance, nonce]))`` of every present account, updated
  in O(1) per touched account. ``state_root = tagged_hash("pouw/state", encode([minted, burned, lthash]))``.
- Economy invariant: Σ balances == minted − burned (escrow, orders and bonds join the left side
  when those kinds arrive). `Supply` tracks minted and burned.
- Transition: ``apply_block(get, supply, txs, miner, subsidy) -> BlockDiff`` never mutates anything;
  it raises TxError(reason) on the first failing transaction.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from chain.encoding import U64_MAX, as_bytes, as_int, as_list, decode, encode
from chain.errors import TxError
from chain.hashing import tagged_hash
from chain.tx import KIND_TRANSFER, Transaction

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
        return encode([self.balance, self.nonce])

    @classmethod
    def decode(cls, data: bytes) -> "Account":
        f = as_list(decode(data, max_bytes=64, max_array=2), 2, what="account")
        return cls(as_int(f[0], what="balance"), as_int(f[1], what="nonce"))


EMPTY = Account()
Getter = Callable[[bytes], Account]


def leaf_vector(address: bytes, acct: Account) -> np.ndarray:
    d = hashlib.shake_256(b"pouw/acct" + address + acct.encode()).digest(LT_BYTES)
    return np.frombuffer(d, dtype="<u2")


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
        return tagged_hash(b"pouw/state", self.encode())

    def updated(self, changes: Iterable[tuple[bytes, Account, Account]], minted: int = 0, burned: int = 0) -> "Supply":
        """Supply after replacing, for each (address, old, new), the old account by the new one."""
        acc = np.frombuffer(self.lthash, dtype="<u2").copy()
        for addr, old, new in changes:
            if old == new:
                continue
            if not old.empty:
                acc -= leaf_vector(addr, old)
            if not new.empty:
                acc += leaf_vector(addr, new)
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
    """The accounts a (context-checked) transaction writes, given the current view `cur`."""
    check_tx_state(cur, tx)
    if tx.kind != KIND_TRANSFER:  # guarded earlier by check_tx; kept for defence in depth
        raise TxError("bad-txn-kind", f"unknown transaction kind {tx.kind}")
    s = cur(tx.sender)
    out = {tx.sender: Account(s.balance - tx.amount - tx.fee, s.nonce + 1)}
    rcpt = tx.payload.recipient
    r = out[rcpt] if rcpt in out else cur(rcpt)
    out[rcpt] = Account(r.balance + tx.amount, r.nonce)
    return out


def apply_block(get: Getter, supply: Supply, txs: Iterable[Transaction], miner: bytes, subsidy: int) -> BlockDiff:
    """Apply txs in order, then pay subsidy + fees to the miner. Pure: `get` is only read."""
    after: dict[bytes, Account] = {}

    def cur(a: bytes) -> Account:
        return after[a] if a in after else get(a)

    fees = 0
    for tx in txs:
        after.update(apply_tx(cur, tx))
        fees += tx.fee
    m = cur(miner)
    after[miner] = Account(m.balance + subsidy + fees, m.nonce)
    before = {a: get(a) for a in after}
    new_supply = supply.updated(((a, before[a], after[a]) for a in after), minted=subsidy)
    return BlockDiff(before, after, supply, new_supply, fees, subsidy)


def genesis_state(alloc: Iterable[tuple[bytes, int]]) -> tuple[dict[bytes, Account], Supply]:
    accounts = {a: Account(v, 0) for a, v in alloc}
    supply = Supply.zero().updated(((a, EMPTY, acct) for a, acct in accounts.items()), minted=sum(v for _, v in alloc))
    return accounts, supply


class MemoryState:
    """A dict-backed state (control replays, verify, tests)."""

    def __init__(self, accounts: dict[bytes, Account], supply: Supply):
        self.accounts = dict(accounts)
        self.supply = supply

    def get(self, a: bytes) -> Account:
        return self.accounts.get(a, EMPTY)

    def apply(self, diff: BlockDiff) -> None:
        for a, acct in diff.after.items():
            if acct.empty:
                self.accounts.pop(a, None)
            else:
                self.accounts[a] = acct
        self.supply = diff.supply_after

    def total_balance(self) -> int:
        return sum(a.balance for a in self.accounts.values())

    def check_conservation(self) -> None:
        if self.total_balance() != self.supply.minted - self.supply.burned:
            raise AssertionError(f"conservation broken: {self.total_balance()} != "
                                 f"{self.supply.minted} - {self.supply.burned}")

"""The compute-token economy inside the state transition (docs/economy.md): issuers, deposits, grants,
balances by kind, period ends, vintages and the job-funding hook. The order book is chain/market.py.

State: economy records are key/value pairs (``key -> bytes``) beside accounts and jobs; each present
pair is a leaf ``shake_256("pouw/econ" ‖ u8(len(key)) ‖ key ‖ value)`` of the state LtHash, stored under
``e`` + key, and undone like accounts. Keys (first byte = table)::

    I issuer(20)                          Issuer record (deposit included)
    G grant_id(32)                        Grant record (grant_id = the grant tx's txid)
    g subscriber(20) grant_id(32)         b"" while the grant is active (the spending order's index)
    V owner(20) issuer(20) expiry(8)      encode(amount): minted tokens of a vintage, usable below `expiry`
    P owner(20)                           encode(amount): spend-only tokens (bought on the market)
    K issuer(20) owner(20)                encode(amount): the issuer's platform credits
    M issuer(20)                          encode([minted, burned]) of the issuer's credits
    O order_id(32)                        Order record (chain/market.py); B.. its book entry
    S height(8) type(1) id                b"": the economy schedule (g grant end, v vintage, o order,
                                          x closed grant pruned)
    F job_id(32)                          encode([[source, id, amount]...]): a job's non-free funding
    C job_id(32)                          b"": its result carried a valid work certificate (chain/workcert.py)
    U height(8) job_key(32)               b"": a template a result certified with (the used set)
    Q                                     encode(next order sequence number)
    T window(8)                           encode([token volume, credit volume, trades, fees])
    R height(8) txid(32)                  encode([issuer, taker, taker_side, fills]): the trade log

Pruned (`prune`, schedule type x): trade records after TRADES_KEPT blocks, volume windows after
VOLUME_WINDOWS_KEPT windows, used templates after CERT_WINDOW blocks, closed grants once their last
vintage expired; undo data restores them like any record.

Invariants (asserted by `econ_totals` users after every test step):
- tokens: Σ free + Σ spend-only + Σ vintage + Σ asks' locks + Σ deposits + Σ active grants' remaining
  + Σ job escrow + Σ bonds == minted − burned;
- credits of each issuer: Σ balances + Σ bids' locks == credits minted − credits burned.
"Usable below E, settled at the end of block E − 1" is the one rule for grant periods, vintages and
order expiry: a transaction at height h ≥ E cannot use the thing, and the schedule settles it at the end
of block E − 1, or of the first later block with room (at most DUE_PER_BLOCK entries per block).
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol

from chain.econtx import (
    KIND_CREDIT_ISSUE,
    KIND_CREDIT_SPEND,
    KIND_GRANT,
    KIND_ISSUER_DEPOSIT,
    KIND_ISSUER_REGISTER,
    KIND_ISSUER_WITHDRAW,
    KIND_ORDER_CANCEL,
    KIND_ORDER_PLACE,
    MODE_BREAKAGE,
    MODE_MINT,
    MODE_NAMES,
    MODE_ROLLOVER,
    CreditIssue,
    CreditSpend,
    Grant,
    IssuerDeposit,
    IssuerRegister,
    IssuerWithdraw,
)
from chain.encoding import (
    U64_MAX,
    RecordMemo,
    as_bytes,
    as_int,
    as_list,
    cached_encoding,
    decode,
    encode,
    encode_record,
    evolve,
)
from chain.errors import TxError

if TYPE_CHECKING:
    from chain.config import ChainConfig
    from chain.jobs import JobRecord
    from chain.state import Account, StateOverlay
    from chain.tx import Transaction

DUE_PER_BLOCK = 256  # economy schedule entries settled per block at most (bounded work)
VELOCITY_WINDOW = 100  # blocks per velocity window (volume is recorded per window)
TRADES_KEPT = VELOCITY_WINDOW  # blocks of trade log (R records) kept in state
VOLUME_WINDOWS_KEPT = 16  # velocity windows (T records) kept in state

SRC_GRANT, SRC_VINTAGE, SRC_SPEND_ONLY = 0, 1, 2  # non-free sources of a job's escrow (spending order)
SRC_NAMES = ("allocation", "vintage", "spend-only")
ACTIVE, CLOSED = 0, 1


def be8(x: int) -> bytes:
    return x.to_bytes(8, "big")


# --- keys ---------------------------------------------------------------------------------------------
def k_issuer(a: bytes) -> bytes:
    return b"I" + a


def k_grant(gid: bytes) -> bytes:
    return b"G" + gid


def k_subgrant(sub: bytes, gid: bytes) -> bytes:
    return b"g" + sub + gid


def k_vintage(owner: bytes, issuer: bytes, expiry: int) -> bytes:
    return b"V" + owner + issuer + be8(expiry)


def k_spend_only(owner: bytes) -> bytes:
    return b"P" + owner


def k_credit(issuer: bytes, owner: bytes) -> bytes:
    return b"K" + issuer + owner


def k_csupply(issuer: bytes) -> bytes:
    return b"M" + issuer


def k_sched(height: int, typ: bytes, ident: bytes) -> bytes:
    return b"S" + be8(height) + typ + ident


def k_fund(job_id: bytes) -> bytes:
    return b"F" + job_id


def k_volume(window: int) -> bytes:
    return b"T" + be8(window)


K_SEQ = b"Q"


_ISSUERS: "RecordMemo[Issuer]" = RecordMemo(1 << 10)  # records by their canonical bytes (see RecordMemo)


_GRANTS: "RecordMemo[GrantRec]" = RecordMemo()


# --- records ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issuer:
    mode: int
    vintage_periods: int
    fee_bps: int
    buyback_bps: int
    deposit: int  # tokens not reserved by a grant
    height: int  # registration height

    def encode(self) -> bytes:
        return cached_encoding(
            self,
            lambda: encode_record(
                [self.mode, self.vintage_periods, self.fee_bps, self.buyback_bps, self.deposit, self.height]
            ),
            _ISSUERS,
        )

    @classmethod
    def decode(cls, b: bytes) -> "Issuer":
        return _ISSUERS.decode(b, cls._decode)

    @classmethod
    def _decode(cls, b: bytes) -> "Issuer":
        f = as_list(decode(b), 6, what="issuer")
        return cls(*(as_int(x, 0, (1 << 64) - 1, what="issuer") for x in f))

    def to_json(self, addr: bytes) -> dict[str, Any]:
        return {
            "issuer": addr.hex(),
            "mode": MODE_NAMES[self.mode],
            "vintage_periods": self.vintage_periods,
            "fee_bps": self.fee_bps,
            "buyback_bps": self.buyback_bps,
            "deposit": self.deposit,
            "registered_height": self.height,
        }


@dataclass(frozen=True)
class GrantRec:
    issuer: bytes
    subscriber: bytes
    allocation: int  # multiply-adds per period
    per_period: int  # tokens reserved per period = ceil(allocation × rate)
    period_blocks: int
    periods_left: int  # periods after the current one
    trial: int
    remaining: int  # tokens of the current period not drawn yet (held by the grant)
    end: int  # the current period is usable below this height
    status: int
    used: int = 0  # tokens drawn by jobs over the grant's life
    minted: int = 0  # tokens minted to the subscriber at period ends

    def encode(self) -> bytes:
        return cached_encoding(
            self,
            lambda: encode_record(
                [
                    self.issuer,
                    self.subscriber,
                    self.allocation,
                    self.per_period,
                    self.period_blocks,
                    self.periods_left,
                    self.trial,
                    self.remaining,
                    self.end,
                    self.status,
                    self.used,
                    self.minted,
                ]
            ),
            _GRANTS,
        )

    @classmethod
    def decode(cls, b: bytes) -> "GrantRec":
        return _GRANTS.decode(b, cls._decode)

    @classmethod
    def _decode(cls, b: bytes) -> "GrantRec":
        f = as_list(decode(b), 12, what="grant")
        return cls(as_bytes(f[0], 20), as_bytes(f[1], 20), *(as_int(x, 0, 1 << 96, what="grant") for x in f[2:]))

    @property
    def held(self) -> int:
        return self.remaining if self.status == ACTIVE else 0

    def to_json(self, gid: bytes) -> dict[str, Any]:
        return {
            "grant_id": gid.hex(),
            "issuer": self.issuer.hex(),
            "subscriber": self.subscriber.hex(),
            "allocation": self.allocation,
            "per_period": self.per_period,
            "period_blocks": self.period_blocks,
            "periods_left": self.periods_left,
            "trial": bool(self.trial),
            "remaining": self.remaining,
            "period_end": self.end,
            "status": ("active", "closed")[self.status],
            "used": self.used,
            "minted": self.minted,
        }


def credit_supply(v: bytes | None) -> tuple[int, int]:
    """(minted, burned) of an issuer's credits from its ``M`` record."""
    if v is None:
        return 0, 0
    f = as_list(decode(v), 2)
    return as_int(f[0]), as_int(f[1])


def enc_int(x: int) -> bytes:
    assert type(x) is int
    return encode_record(x)


_UINT = {0xCC: (2, 1 << 7), 0xCD: (3, 1 << 8), 0xCE: (5, 1 << 16), 0xCF: (9, 1 << 32)}  # head: (size, least value)


def dec_int(b: bytes | None) -> int:
    """An amount record (a canonical msgpack uint, or absent: 0). Canonical fixint and uint8..64 forms are
    read directly; anything else goes to the strict decoder, which accepts or rejects it the same way."""
    if b is None:
        return 0
    if type(b) is bytes and b:
        head = b[0]
        if head < 0x80 and len(b) == 1:
            return head
        form = _UINT.get(head)
        if form is not None and len(b) == form[0]:
            x = int.from_bytes(b[1:], "big")
            if x >= form[1]:
                return x
    return as_int(decode(b), what="amount")


# --- the store a ledger reads -------------------------------------------------------------------------
class EconSource(Protocol):
    """Read access to the economy records at a state (ChainState, MemoryState, a batch view)."""

    def get_econ(self, key: bytes) -> bytes | None: ...
    def scan_econ(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]: ...


def merge_scan(
    base: Iterable[tuple[bytes, bytes]],
    writes: dict[bytes, bytes | None],
    prefix: bytes,
    keys: list[bytes] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """Key-ordered pairs under `prefix` of `base` with `writes` on top (None = deleted). `keys`, when
    given, is the sorted list of `writes`' keys (saves filtering every write)."""
    if keys is None:
        over = sorted((k, v) for k, v in writes.items() if k.startswith(prefix))
    else:
        i = bisect.bisect_left(keys, prefix)
        over = []
        while i < len(keys) and keys[i].startswith(prefix):
            over.append((keys[i], writes[keys[i]]))
            i += 1
    if not over:  # nothing written under the prefix: the base as it is
        yield from base
        return
    mine = {k for k, _ in over}
    base_it = ((k, v) for k, v in base if k not in mine)
    for k, v in heapq.merge(base_it, ((k, v) for k, v in over if v is not None), key=lambda kv: kv[0]):
        yield k, v


class Ledger:
    """One transaction's (or the schedule's) view: reads fall through to a StateOverlay, writes are
    buffered and reach the overlay only by `commit()`, so a TxError leaves nothing changed."""

    def __init__(self, ov: StateOverlay, height: int, cfg: ChainConfig):
        self.ov = ov
        self.height = height
        self.cfg = cfg
        self.accts: dict[bytes, Account] = {}
        self.kv: dict[bytes, bytes | None] = {}

    # accounts (free balance)
    def acct(self, a: bytes) -> Account:
        return self.accts[a] if a in self.accts else self.ov.get(a)

    def free(self, a: bytes) -> int:
        return self.acct(a).balance

    def add_free(self, a: bytes, x: int) -> None:
        s = self.acct(a)
        if s.balance + x < 0:
            raise AssertionError("free balance below zero")
        self.accts[a] = type(s)(s.balance + x, s.nonce)

    # records
    def get(self, key: bytes) -> bytes | None:
        return self.kv[key] if key in self.kv else self.ov.get_econ(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.kv[key] = value

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return merge_scan(self.ov.scan_econ(prefix), self.kv, prefix)

    def get_int(self, key: bytes) -> int:
        return dec_int(self.get(key))

    def add_int(self, key: bytes, x: int) -> None:
        v = self.get_int(key) + x
        if v < 0:
            raise AssertionError(f"record {key[:1]!r} below zero")
        self.put(key, enc_int(v) if v else None)

    def issuer(self, a: bytes) -> Issuer | None:
        v = self.get(k_issuer(a))
        return Issuer.decode(v) if v is not None else None

    def put_issuer(self, a: bytes, rec: Issuer) -> None:
        self.put(k_issuer(a), rec.encode())

    def add_deposit(self, a: bytes, x: int) -> None:
        rec = self.issuer(a)
        assert rec is not None and rec.deposit + x >= 0
        self.put_issuer(a, evolve(rec, deposit=rec.deposit + x))

    def grant(self, gid: bytes) -> GrantRec | None:
        v = self.get(k_grant(gid))
        return GrantRec.decode(v) if v is not None else None

    def add_credits(self, issuer: bytes, owner: bytes, x: int) -> None:
        self.add_int(k_credit(issuer, owner), x)

    def mint_credits(self, issuer: bytes, owner: bytes, x: int) -> None:
        m, b = self.credit_supply(issuer)
        self.put(k_csupply(issuer), encode([m + x, b]))
        self.add_credits(issuer, owner, x)

    def burn_credits(self, issuer: bytes, owner: bytes, x: int) -> None:
        m, b = self.credit_supply(issuer)
        self.put(k_csupply(issuer), encode([m, b + x]))
        self.add_credits(issuer, owner, -x)

    def credit_supply(self, issuer: bytes) -> tuple[int, int]:
        return credit_supply(self.get(k_csupply(issuer)))

    def restore_vintage(self, owner: bytes, issuer: bytes, expiry: int, x: int) -> None:
        """Tokens going back to a vintage: to the issuer's deposit once the vintage is past its expiry."""
        if not x:
            return
        if self.height >= expiry or self.issuer(issuer) is None:
            self.add_deposit(issuer, x)
        else:
            self.add_int(k_vintage(owner, issuer, expiry), x)

    def commit(self) -> None:
        self.ov.accts.update(self.accts)
        self.ov.commit_econ(self.kv)


# --- the sender's envelope -------------------------------------------------------------------------------
def take_envelope(led: Ledger, tx: Transaction) -> None:
    """Nonce and fee: the fee is always paid in free tokens (never spend-only or vintage: no fee
    laundering through a block one mines)."""
    s = led.acct(tx.sender)
    if tx.nonce != s.nonce or s.nonce >= U64_MAX:
        raise TxError("bad-txn-nonce", f"nonce {tx.nonce}, account expects {s.nonce}")
    if s.balance < tx.fee:
        raise TxError("bad-txn-balance", f"balance {s.balance} < fee {tx.fee}")
    led.accts[tx.sender] = type(s)(s.balance - tx.fee, s.nonce + 1)


def grant_reserve(cfg: ChainConfig, allocation: int) -> int:
    """Tokens a grant reserves per period: ceil(allocation × rate_num / rate_den) (the issuer pays the rounding)."""
    j = cfg.jobs
    return -(-(allocation * j.rate_num) // j.rate_den)


def apply_econ_tx(ov: StateOverlay, tx: Transaction, height: int, cfg: ChainConfig) -> None:
    """Check and apply one economy transaction on a StateOverlay (atomic: TxError changes nothing)."""
    from chain import market

    led = Ledger(ov, height, cfg)
    take_envelope(led, tx)
    p = tx.payload
    me = tx.sender
    k = tx.kind
    if k == KIND_ISSUER_REGISTER:
        assert isinstance(p, IssuerRegister)
        if led.issuer(me) is not None:
            raise TxError("bad-issuer-exists", "the sender is already an issuer")
        led.put_issuer(me, Issuer(p.mode, p.vintage_periods, p.fee_bps, p.buyback_bps, 0, height))
    elif k in (KIND_ISSUER_DEPOSIT, KIND_ISSUER_WITHDRAW, KIND_GRANT, KIND_CREDIT_ISSUE):
        iss = led.issuer(me)
        if iss is None:
            raise TxError("bad-issuer-unknown", "the sender is not an issuer")
        if k == KIND_ISSUER_DEPOSIT:
            assert isinstance(p, IssuerDeposit)
            if led.free(me) < p.amount:
                raise TxError("bad-txn-balance", f"balance {led.free(me)} < deposit {p.amount}")
            led.add_free(me, -p.amount)
            led.add_deposit(me, p.amount)
        elif k == KIND_ISSUER_WITHDRAW:
            assert isinstance(p, IssuerWithdraw)
            if iss.deposit < p.amount:
                raise TxError("bad-issuer-deposit", f"unreserved deposit {iss.deposit} < {p.amount}")
            led.add_deposit(me, -p.amount)
            led.add_free(me, p.amount)
        elif k == KIND_GRANT:
            assert isinstance(p, Grant)
            if p.subscriber == me:
                raise TxError("bad-grant-self", "an issuer cannot grant itself")
            need = grant_reserve(cfg, p.allocation)
            if need < 1:
                raise TxError("bad-grant-allocation", "allocation is worth less than one base unit")
            if iss.deposit < need:
                raise TxError("bad-grant-deposit", f"deposit {iss.deposit} < reserve {need}")
            if led.get(k_grant(tx.txid)) is not None:
                raise TxError("bad-grant-exists", "grant id already used")
            led.add_deposit(me, -need)
            g = GrantRec(
                me,
                p.subscriber,
                p.allocation,
                need,
                p.period_blocks,
                p.periods - 1,
                p.trial,
                need,
                height + p.period_blocks,
                ACTIVE,
            )
            led.put(k_grant(tx.txid), g.encode())
            led.put(k_subgrant(p.subscriber, tx.txid), b"")
            led.put(k_sched(g.end - 1, b"g", tx.txid), b"")
        else:
            assert isinstance(p, CreditIssue)
            led.mint_credits(me, p.recipient, p.amount)
    elif k == KIND_CREDIT_SPEND:
        assert isinstance(p, CreditSpend)
        if led.issuer(p.issuer) is None:
            raise TxError("bad-issuer-unknown", "no such issuer")
        have = led.get_int(k_credit(p.issuer, me))
        if have < p.amount:
            raise TxError("bad-credit-balance", f"credits {have} < {p.amount}")
        led.burn_credits(p.issuer, me, p.amount)
    elif k == KIND_ORDER_PLACE:
        market.place(led, tx)
    elif k == KIND_ORDER_CANCEL:
        market.cancel(led, tx)
    else:  # pragma: no cover - guarded by ECON_KINDS
        raise TxError("bad-txn-kind", f"kind {k}")
    led.commit()


# --- the spending order (written once) ------------------------------------------------------------------
def spendable(led: Ledger, owner: bytes) -> list[tuple[int, bytes, int]]:
    """What `owner` can pay a job with at led.height, in the spending order: active grants' allocation
    (earliest period end first, then grant id), vintages (earliest expiry first, then issuer),
    spend-only tokens. The free balance comes last and is not listed. Items: (source, id, amount)."""
    out: list[tuple[int, tuple[int, bytes], bytes, int]] = []
    for key, _ in led.scan(b"g" + owner):
        gid = key[21:]
        g = led.grant(gid)
        if g is not None and g.status == ACTIVE and g.end > led.height and g.remaining:
            out.append((SRC_GRANT, (g.end, gid), gid, g.remaining))
    for key, v in led.scan(b"V" + owner):
        issuer, expiry = key[21:41], int.from_bytes(key[41:49], "big")
        if expiry > led.height:
            out.append((SRC_VINTAGE, (expiry, issuer), issuer + be8(expiry), dec_int(v)))
    out.sort(key=lambda x: (x[0], x[1]))
    so = led.get_int(k_spend_only(owner))
    items = [(s, i, a) for s, _, i, a in out]
    if so:
        items.append((SRC_SPEND_ONLY, b"", so))
    return items


FundPart = list[Any]  # [source (int), id (bytes), amount (int)]: a list, as the funding record encodes it


def draw(led: Ledger, owner: bytes, amount: int) -> tuple[list[FundPart], int]:
    """Take `amount` from `owner` in the spending order. Returns (the non-free parts [[source, id, x]...]:
    id = grant id ‖ issuer, issuer ‖ expiry(8) of a vintage, b"" for spend-only; the free part).
    Raises TxError('bad-txn-balance') if everything together is short."""
    parts: list[FundPart] = []
    left = amount
    for src, ident, have in spendable(led, owner):
        if not left:
            break
        x = min(have, left)
        left -= x
        if src == SRC_GRANT:
            g = led.grant(ident)
            assert g is not None
            led.put(k_grant(ident), evolve(g, remaining=g.remaining - x, used=g.used + x).encode())
            ident = ident + g.issuer  # the funding record names the issuer: a refund needs no grant record
        elif src == SRC_VINTAGE:
            led.add_int(k_vintage(owner, ident[:20], int.from_bytes(ident[20:], "big")), -x)
        else:
            led.add_int(k_spend_only(owner), -x)
        parts.append([src, ident, x])
    if left > led.free(owner):
        raise TxError("bad-txn-balance", f"allocation, tokens and balance short of {amount}")
    led.add_free(owner, -left)
    return parts, left


def restore(led: Ledger, owner: bytes, parts: list[FundPart], amount: int) -> int:
    """Give back up to `amount` to the non-free sources `parts` in the spending order; returns what
    was restored (the rest is the caller's to pay as free tokens). A grant that is no longer active
    and a vintage past its expiry pass the tokens to their issuer's deposit."""
    done = 0
    for src, ident, x in parts:
        y = min(x, amount - done)
        if y <= 0:
            break
        done += y
        if src == SRC_GRANT:
            gid, issuer = ident[:32], ident[32:]
            g = led.grant(gid)  # None once a closed grant's record was pruned
            if g is not None and g.status == ACTIVE and g.end > led.height:
                led.put(k_grant(gid), evolve(g, remaining=g.remaining + y, used=g.used - min(y, g.used)).encode())
            else:
                led.add_deposit(issuer, y)
        elif src == SRC_VINTAGE:
            led.restore_vintage(owner, ident[:20], int.from_bytes(ident[20:], "big"), y)
        else:
            led.add_int(k_spend_only(owner), y)
    return done


# --- the job hooks (called by chain/state.py's StateOverlay) -----------------------------------------------
def prepare_job_funding(ov: StateOverlay, tx: Transaction, height: int, cfg: ChainConfig) -> Ledger:
    """A job submit's escrow (its max fee) drawn in the spending order: the fee and nonce from the free
    balance, the escrow from allocation, vintages, spend-only tokens, then free tokens; the funding
    record remembers the non-free parts. Raises TxError like a balance check; the caller commits the
    returned Ledger once the job rules (chain/jobs.py) accepted the job."""
    led = Ledger(ov, height, cfg)
    take_envelope(led, tx)
    parts, _free = draw(led, tx.sender, tx.amount)
    if parts:
        led.put(k_fund(tx.txid), encode(parts))
    return led


def _parts(v: bytes) -> list[FundPart]:
    return [[as_int(s), as_bytes(i), as_int(x)] for s, i, x in as_list(decode(v))]


def job_closed(
    ov: StateOverlay, height: int, cfg: ChainConfig, closed: Iterable[tuple[bytes, "JobRecord", int]]
) -> list[tuple[bytes, int]]:
    """Jobs that just closed: (job_id, new record, what the client is credited now). A funded job's
    credit goes back to its non-free sources first. A released funded job pays its miner the non-free
    part in free tokens only if its result carried a valid work certificate (``C job_id``,
    chain/workcert.py), else as spend-only tokens: no path turns allocation, vintage or spend-only tokens
    into free tokens without a share of the job's work. Returns balance corrections [(address, −x)]."""
    from chain.jobs import RELEASED
    from chain.workcert import k_certified

    led = Ledger(ov, height, cfg)
    out = []
    for jid, rec, credited in closed:
        v = led.get(k_fund(jid))
        certified = led.get(k_certified(jid)) is not None
        if certified:
            led.put(k_certified(jid), None)
        if v is None:
            continue
        led.put(k_fund(jid), None)
        parts = _parts(v)
        if rec.status == RELEASED:
            if not certified:
                r = sum(x for _, _, x in parts)
                led.add_int(k_spend_only(rec.miner), r)
                out.append((rec.miner, -r))
            continue
        back = restore(led, rec.client, parts, credited)
        if back:
            out.append((rec.client, -back))
    led.commit()
    return out


def certify(
    ov: StateOverlay, height: int, cfg: ChainConfig, job_id: bytes, template_height: int, job_key: bytes
) -> Ledger:
    """Record a result's valid work certificate: its template joins the used set (`bad-cert-used` if an
    earlier result used it) and a restricted-funded job is marked certified. Returns the Ledger to commit."""
    from chain.workcert import k_certified, k_used

    led = Ledger(ov, height, cfg)
    if led.get(k_used(template_height, job_key)) is not None:
        raise TxError("bad-cert-used", "this template already certified a result")
    led.put(k_used(template_height, job_key), b"")
    if led.get(k_fund(job_id)) is not None:
        led.put(k_certified(job_id), b"")
    return led


# --- the schedule -------------------------------------------------------------------------------------------
def run_due(ov: StateOverlay, height: int, cfg: ChainConfig) -> list[tuple[bytes, str]]:
    """Settle at most DUE_PER_BLOCK economy schedule entries due at or before `height` (oldest first):
    grant period ends, vintage expiries and order expiries. Returns events [(id, what)]."""
    from chain import market

    led = Ledger(ov, height, cfg)
    events: list[tuple[bytes, str]] = []
    due: list[bytes] = []
    for key, _ in led.scan(b"S"):
        if int.from_bytes(key[1:9], "big") > height or len(due) >= DUE_PER_BLOCK:
            break
        due.append(key)
    for key in due:
        led.put(key, None)
        typ, ident = key[9:10], key[10:]
        if typ == b"g":
            events.append((ident, period_end(led, ident)))
        elif typ == b"v":
            owner, issuer = ident[:20], ident[20:40]
            vk = k_vintage(owner, issuer, int.from_bytes(ident[40:48], "big"))
            x = led.get_int(vk)
            if x:
                led.put(vk, None)
                led.add_deposit(issuer, x)
            events.append((ident, "vintage-expired"))
        elif typ == b"o":
            if market.expire(led, ident):
                events.append((ident, "order-expired"))
        elif typ == b"x":
            if led.get(k_grant(ident)) is not None:
                led.put(k_grant(ident), None)
                events.append((ident, "grant-pruned"))
    prune(led, height)
    led.commit()
    return events


def prune(led: Ledger, height: int) -> None:
    """Records nobody needs any more leave the state at the end of block `height` (deterministic, bounded
    by what earlier blocks wrote): the trade log of blocks ≤ height − TRADES_KEPT, the volume windows
    before the last VOLUME_WINDOWS_KEPT, and the work-certificate templates too old to be accepted
    (chain/workcert.py). Closed grants leave through the schedule (type ``x``, `period_end`)."""
    from chain.workcert import CERT_WINDOW

    for prefix, below in (
        (b"R", height - TRADES_KEPT + 1),
        (b"T", height // VELOCITY_WINDOW - VOLUME_WINDOWS_KEPT + 1),
        (b"U", height + 1 - CERT_WINDOW),
    ):
        if below <= 0:
            continue
        dead = []
        for key, _ in led.scan(prefix):
            if int.from_bytes(key[1:9], "big") >= below:
                break
            dead.append(key)
        for key in dead:
            led.put(key, None)


def period_end(led: Ledger, gid: bytes) -> str:
    """One grant period's end: the unused allocation is minted as a vintage, rolled over or returned
    per the issuer's mode (trial grants never mint); then the next period reserves from the deposit."""
    g = led.grant(gid)
    if g is None or g.status != ACTIVE:
        return "none"
    iss = led.issuer(g.issuer)
    assert iss is not None
    left, carry, minted = g.remaining, 0, 0
    if left and (g.trial or iss.mode == MODE_BREAKAGE):
        led.add_deposit(g.issuer, left)
    elif left and iss.mode == MODE_MINT:
        expiry = g.end + iss.vintage_periods * g.period_blocks
        led.add_int(k_vintage(g.subscriber, g.issuer, expiry), left)
        led.put(k_sched(expiry - 1, b"v", g.subscriber + g.issuer + be8(expiry)), b"")
        minted = left
    elif left:
        assert iss.mode == MODE_ROLLOVER
        carry = left
    iss = led.issuer(g.issuer)
    assert iss is not None
    if g.periods_left and iss.deposit >= g.per_period:
        led.add_deposit(g.issuer, -g.per_period)
        ng = evolve(
            g,
            periods_left=g.periods_left - 1,
            remaining=g.per_period + carry,
            end=g.end + g.period_blocks,
            minted=g.minted + minted,
        )
        led.put(k_sched(ng.end - 1, b"g", gid), b"")
        led.put(k_grant(gid), ng.encode())
        return "renewed"
    if carry:
        led.add_deposit(g.issuer, carry)
    led.put(k_grant(gid), evolve(g, remaining=0, status=CLOSED, minted=g.minted + minted).encode())
    led.put(k_subgrant(g.subscriber, gid), None)
    # the closed record stays (API) until the last vintage it could have minted has expired
    led.put(k_sched(g.end + iss.vintage_periods * g.period_blocks - 1, b"x", gid), b"")
    return "closed" if not g.periods_left else "lapsed"


# --- totals (conservation) ----------------------------------------------------------------------------------
@dataclass
class EconTotals:
    spend_only: int = 0
    vintage: int = 0
    ask_locked: int = 0
    deposits: int = 0
    grants: int = 0
    credits: dict[bytes, list[int]] | None = None  # issuer -> [balances, bid locks, minted, burned]

    @property
    def tokens(self) -> int:
        return self.spend_only + self.vintage + self.ask_locked + self.deposits + self.grants

    def check_credits(self) -> None:
        for iss, (bal, locked, minted, burned) in (self.credits or {}).items():
            if bal + locked != minted - burned:
                raise AssertionError(f"credits of {iss.hex()[:8]}: {bal} + locked {locked} != {minted} - {burned}")


def econ_totals(items: Iterable[tuple[bytes, bytes]]) -> EconTotals:
    """Where the economy's tokens and credits are, from all economy records."""
    from chain.market import Order

    cr: dict[bytes, list[int]] = {}
    t = EconTotals(credits=cr)
    for key, v in items:
        tag = key[:1]
        if tag == b"P":
            t.spend_only += dec_int(v)
        elif tag == b"V":
            t.vintage += dec_int(v)
        elif tag == b"I":
            t.deposits += Issuer.decode(v).deposit
        elif tag == b"G":
            t.grants += GrantRec.decode(v).held
        elif tag == b"K":
            cr.setdefault(key[1:21], [0, 0, 0, 0])[0] += dec_int(v)
        elif tag == b"M":
            f = as_list(decode(v), 2)
            c = cr.setdefault(key[1:21], [0, 0, 0, 0])
            c[2] += as_int(f[0])
            c[3] += as_int(f[1])
        elif tag == b"O":
            o = Order.decode(v)
            if o.is_bid:
                cr.setdefault(o.issuer, [0, 0, 0, 0])[1] += o.locked
            else:
                t.ask_locked += o.locked
    return t


# --- read-only views (API, CLI, tests) -----------------------------------------------------------------
def holdings(src: EconSource, free: int, owner: bytes) -> dict[str, Any]:
    """An account's balances by kind at a state (`src`: anything with get_econ/scan_econ)."""
    vint = [
        {"issuer": k[21:41].hex(), "expiry": int.from_bytes(k[41:49], "big"), "amount": dec_int(v)}
        for k, v in src.scan_econ(b"V" + owner)
    ]
    grants = []
    for k, _ in src.scan_econ(b"g" + owner):
        v = src.get_econ(k_grant(k[21:]))
        if v is not None:
            grants.append(GrantRec.decode(v).to_json(k[21:]))
    return {
        "address": owner.hex(),
        "free": free,
        "spend_only": dec_int(src.get_econ(k_spend_only(owner))),
        "vintages": vint,
        "vintage_total": sum(x["amount"] for x in vint),
        "allocation_tokens": sum(g["remaining"] for g in grants if g["status"] == "active"),
        "grants": grants,
    }


def credits_of(src: EconSource, issuer: bytes, owner: bytes) -> int:
    return dec_int(src.get_econ(k_credit(issuer, owner)))

"""Payloads of the economy's transaction kinds (docs/economy.md) and their context-free checks.

Encodings (msgpack arrays, fixed order; the envelope is chain/tx.py's)::

    order place      (4):  [issuer(20), side, price, qty, tif, expires, source]
    order cancel     (5):  [order_id(32)]
    issuer register (10):  [mode, vintage_periods, fee_bps, buyback_bps]
    issuer deposit  (11):  [amount]
    issuer withdraw (12):  [amount]
    grant           (13):  [subscriber(20), allocation, period_blocks, periods, trial]
    credit issue    (14):  [recipient(20), amount]
    credit spend    (15):  [issuer(20), amount]

This module depends on the encoding only (chain/tx.py imports it).
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.encoding import Obj, as_bytes, as_int, as_list
from chain.errors import TxError

KIND_ORDER_PLACE = 4
KIND_ORDER_CANCEL = 5
KIND_ISSUER_REGISTER = 10
KIND_ISSUER_DEPOSIT = 11
KIND_ISSUER_WITHDRAW = 12
KIND_GRANT = 13
KIND_CREDIT_ISSUE = 14
KIND_CREDIT_SPEND = 15
ECON_KINDS = frozenset(
    {
        KIND_ORDER_PLACE,
        KIND_ORDER_CANCEL,
        KIND_ISSUER_REGISTER,
        KIND_ISSUER_DEPOSIT,
        KIND_ISSUER_WITHDRAW,
        KIND_GRANT,
        KIND_CREDIT_ISSUE,
        KIND_CREDIT_SPEND,
    }
)

MODE_MINT, MODE_ROLLOVER, MODE_BREAKAGE = 0, 1, 2
MODE_NAMES = ("mint", "rollover", "breakage")
BID, ASK = 0, 1
SIDE_NAMES = ("bid", "ask")
GTC, IOC = 0, 1
TIF_NAMES = ("gtc", "ioc")
SRC_FREE, SRC_SPEND_ONLY = 0, 1  # an ask's source; any value >= 2 names a vintage by its expiry height

BPS = 10_000  # basis points: fees, buyback and prices are in units of 1/10,000
MAX_PRICE = 1_000_000_000  # 100,000x face value
MAX_AMOUNT = (1 << 63) - 1
MAX_VINTAGE_PERIODS = 1_000
MAX_PERIOD_BLOCKS = 10_000_000
MAX_PERIODS = 10_000
MAX_ALLOCATION = 1 << 80  # multiply-adds per period

_ADDR = 20


@dataclass(frozen=True)
class OrderPlace:
    """Buy (bid) or sell (ask) `qty` token base units at `price` credit base units per BPS token base
    units (BPS = face value) in `issuer`'s book. `expires`: 0 = none, else the first height at which
    the order is gone. `source` (asks): SRC_FREE or a vintage expiry height of this issuer's tokens."""

    issuer: bytes
    side: int
    price: int
    qty: int
    tif: int
    expires: int
    source: int

    def to_list(self) -> list[Obj]:
        return [self.issuer, self.side, self.price, self.qty, self.tif, self.expires, self.source]

    @property
    def debit(self) -> int:
        return self.qty if self.side == ASK and self.source == SRC_FREE else 0


@dataclass(frozen=True)
class OrderCancel:
    order_id: bytes

    def to_list(self) -> list[Obj]:
        return [self.order_id]


@dataclass(frozen=True)
class IssuerRegister:
    """The sender becomes an issuer. `vintage_periods`: how many of a grant's periods minted tokens live."""

    mode: int
    vintage_periods: int
    fee_bps: int
    buyback_bps: int

    def to_list(self) -> list[Obj]:
        return [self.mode, self.vintage_periods, self.fee_bps, self.buyback_bps]


@dataclass(frozen=True)
class IssuerDeposit:
    amount: int

    def to_list(self) -> list[Obj]:
        return [self.amount]

    @property
    def debit(self) -> int:
        return self.amount


@dataclass(frozen=True)
class IssuerWithdraw:
    amount: int

    def to_list(self) -> list[Obj]:
        return [self.amount]


@dataclass(frozen=True)
class Grant:
    """`allocation` multiply-adds per period of `period_blocks` blocks, for `periods` periods."""

    subscriber: bytes
    allocation: int
    period_blocks: int
    periods: int
    trial: int

    def to_list(self) -> list[Obj]:
        return [self.subscriber, self.allocation, self.period_blocks, self.periods, self.trial]


@dataclass(frozen=True)
class CreditIssue:
    recipient: bytes
    amount: int

    def to_list(self) -> list[Obj]:
        return [self.recipient, self.amount]


@dataclass(frozen=True)
class CreditSpend:
    issuer: bytes
    amount: int

    def to_list(self) -> list[Obj]:
        return [self.issuer, self.amount]


def decode_econ_payload(kind: int, payload: Obj) -> Obj:
    """The payload object of an economy kind; malformed fields raise EncodingError."""

    def a(x: Obj, w: str) -> bytes:
        return as_bytes(x, _ADDR, what=w)

    def i(x: Obj, w: str) -> int:
        return as_int(x, what=w)

    if kind == KIND_ORDER_PLACE:
        p = as_list(payload, 7, what="order_place")
        return OrderPlace(
            a(p[0], "order.issuer"),
            i(p[1], "order.side"),
            i(p[2], "order.price"),
            i(p[3], "order.qty"),
            i(p[4], "order.tif"),
            i(p[5], "order.expires"),
            i(p[6], "order.source"),
        )
    if kind == KIND_ORDER_CANCEL:
        p = as_list(payload, 1, what="order_cancel")
        return OrderCancel(as_bytes(p[0], 32, what="cancel.order_id"))
    if kind == KIND_ISSUER_REGISTER:
        p = as_list(payload, 4, what="issuer_register")
        return IssuerRegister(
            i(p[0], "issuer.mode"),
            i(p[1], "issuer.vintage_periods"),
            i(p[2], "issuer.fee_bps"),
            i(p[3], "issuer.buyback_bps"),
        )
    if kind in (KIND_ISSUER_DEPOSIT, KIND_ISSUER_WITHDRAW):
        p = as_list(payload, 1, what="issuer_amount")
        return (IssuerDeposit if kind == KIND_ISSUER_DEPOSIT else IssuerWithdraw)(i(p[0], "issuer.amount"))
    if kind == KIND_GRANT:
        p = as_list(payload, 5, what="grant")
        return Grant(
            a(p[0], "grant.subscriber"),
            as_int(p[1], 0, MAX_ALLOCATION, what="grant.allocation"),
            i(p[2], "grant.period_blocks"),
            i(p[3], "grant.periods"),
            i(p[4], "grant.trial"),
        )
    if kind == KIND_CREDIT_ISSUE:
        p = as_list(payload, 2, what="credit_issue")
        return CreditIssue(a(p[0], "credit.recipient"), i(p[1], "credit.amount"))
    if kind == KIND_CREDIT_SPEND:
        p = as_list(payload, 2, what="credit_spend")
        return CreditSpend(a(p[0], "credit.issuer"), i(p[1], "credit.amount"))
    raise AssertionError(kind)


def check_econ_payload(kind: int, p: Obj) -> None:
    """Context-free range checks of an economy payload: raise TxError(reason)."""

    def amount(x: int, reason: str) -> None:
        if not 0 < x <= MAX_AMOUNT:
            raise TxError(reason, "amount out of range")

    if kind == KIND_ORDER_PLACE:
        if p.side not in (BID, ASK):
            raise TxError("bad-order-side", f"side {p.side}")
        if not 0 < p.price <= MAX_PRICE:
            raise TxError("bad-order-price", f"price {p.price} not in [1, {MAX_PRICE}]")
        amount(p.qty, "bad-order-qty")
        if p.tif not in (GTC, IOC):
            raise TxError("bad-order-tif", f"time in force {p.tif}")
        if p.tif == IOC and p.expires:
            raise TxError("bad-order-expiry", "an immediate-or-cancel order cannot carry an expiry")
        if p.side == BID and p.source != SRC_FREE:
            raise TxError("bad-order-source", "a bid pays credits: source must be 0")
        if p.side == ASK and p.source == SRC_SPEND_ONLY:
            raise TxError("bad-order-one-hop", "tokens bought on the market cannot be re-sold")
    elif kind == KIND_ISSUER_REGISTER:
        if p.mode not in (MODE_MINT, MODE_ROLLOVER, MODE_BREAKAGE):
            raise TxError("bad-issuer-mode", f"mode {p.mode}")
        if not 1 <= p.vintage_periods <= MAX_VINTAGE_PERIODS:
            raise TxError("bad-issuer-vintage", f"vintage_periods {p.vintage_periods}")
        if not 0 <= p.fee_bps <= BPS:
            raise TxError("bad-issuer-fee", f"fee {p.fee_bps} bps")
        if not 0 <= p.buyback_bps <= BPS:
            raise TxError("bad-issuer-buyback", f"buyback {p.buyback_bps} bps")
    elif kind in (KIND_ISSUER_DEPOSIT, KIND_ISSUER_WITHDRAW, KIND_CREDIT_ISSUE, KIND_CREDIT_SPEND):
        amount(p.amount, "bad-econ-amount")
    elif kind == KIND_GRANT:
        if not 0 < p.allocation <= MAX_ALLOCATION:
            raise TxError("bad-grant-allocation", "allocation out of range")
        if not 0 < p.period_blocks <= MAX_PERIOD_BLOCKS or not 0 < p.periods <= MAX_PERIODS:
            raise TxError("bad-grant-period", "period length or count out of range")
        if p.trial not in (0, 1):
            raise TxError("bad-grant-trial", "trial must be 0 or 1")

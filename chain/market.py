"""The on-chain order books (docs/economy.md §Market): one per issuer, tokens against its credits.

- Price: credit base units per BPS token base units (BPS = 10,000 = face value: one credit per token).
  The value of q tokens at price p is ``value(q, p) = ceil(q·p / BPS)``. A resting bid locks
  ``value(remaining, price)`` credits; a fill of f against a maker with `remaining` at its price pays
  ``value(remaining, price) − value(remaining − f, price)``, so a maker's fills sum exactly to the value
  of its order and a bid's lock always covers what is left (no rounding can strand or overdraw).
- Priority: price, then time (a sequence number given at placement). A fill is at the maker's price.
- Taker fee: ``ceil(payment · fee_bps / BPS)`` credits, rounded up, paid by the taker to the issuer.
- Self-trade policy: cancel the resting order (its owner's own order met as a maker is cancelled and
  unlocked; matching goes on).
- Work bound: at most MAX_FILLS makers touched per order (fills, expired or self-trade cancels). An
  order that hits the bound does not rest: its remainder is returned (IOC or GTC alike).
- Buyback: the issuer's standing bid for any quantity at ``buyback_bps`` (0 = none), behind resting bids
  at the same price. A buyback fill pays ``value(f, buyback_bps) − fee`` credits, minted by the issuer;
  the tokens go to the issuer's deposit. The issuer itself cannot sell into its buyback.
- The one-hop rule: bought tokens are credited as spend-only (``P`` records); an ask's source is free
  tokens or a vintage of this issuer, never spend-only tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chain.econtx import ASK, BID, BPS, GTC, IOC, SIDE_NAMES, SRC_FREE, OrderCancel, OrderPlace
from chain.economy import (
    K_SEQ,
    VELOCITY_WINDOW,
    Ledger,
    be8,
    dec_int,
    enc_int,
    k_credit,
    k_sched,
    k_spend_only,
    k_vintage,
    k_volume,
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
    from chain.tx import Transaction

MAX_FILLS = 32
_ORDERS: "RecordMemo[Order]" = RecordMemo()  # order records by their canonical bytes (see RecordMemo)


def value(q: int, p: int) -> int:
    """Credits for q tokens at price p, rounded up."""
    return -(-(q * p) // BPS)


def taker_fee(payment: int, fee_bps: int) -> int:
    return -(-(payment * fee_bps) // BPS)


@dataclass(frozen=True)
class Order:
    issuer: bytes
    owner: bytes
    side: int
    price: int
    qty: int
    remaining: int
    source: int
    expires: int  # 0 = none; else usable below this height
    seq: int
    height: int

    def encode(self) -> bytes:
        return cached_encoding(
            self,
            lambda: encode_record(
                [
                    self.issuer,
                    self.owner,
                    self.side,
                    self.price,
                    self.qty,
                    self.remaining,
                    self.source,
                    self.expires,
                    self.seq,
                    self.height,
                ]
            ),
            _ORDERS,
        )

    @classmethod
    def decode(cls, b: bytes) -> "Order":
        """Strict decode (memoised: an order the transition wrote or read recently is not decoded again)."""
        return _ORDERS.decode(b, cls._decode)

    @classmethod
    def _decode(cls, b: bytes) -> "Order":
        f = as_list(decode(b), 10, what="order")
        return cls(as_bytes(f[0], 20), as_bytes(f[1], 20), *(as_int(x, what="order") for x in f[2:]))

    @property
    def is_bid(self) -> bool:
        return self.side == BID

    @property
    def locked(self) -> int:
        """Credits (bid) or tokens (ask) the order holds."""
        return value(self.remaining, self.price) if self.is_bid else self.remaining

    def book_key(self, oid: bytes) -> bytes:
        pk = U64_MAX - self.price if self.is_bid else self.price
        return b"B" + self.issuer + bytes([self.side]) + be8(pk) + be8(self.seq) + oid

    def to_json(self, oid: bytes) -> dict[str, Any]:
        return {
            "order_id": oid.hex(),
            "issuer": self.issuer.hex(),
            "owner": self.owner.hex(),
            "side": SIDE_NAMES[self.side],
            "price": self.price,
            "qty": self.qty,
            "remaining": self.remaining,
            "source": self.source,
            "expires": self.expires,
            "seq": self.seq,
            "height": self.height,
            "locked": self.locked,
        }


def k_order(oid: bytes) -> bytes:
    return b"O" + oid


def book_prefix(issuer: bytes, side: int) -> bytes:
    return b"B" + issuer + bytes([side])


def get_order(led: Ledger, oid: bytes) -> Order | None:
    v = led.get(k_order(oid))
    return Order.decode(v) if v is not None else None


def _remove(led: Ledger, oid: bytes, o: Order) -> None:
    led.put(k_order(oid), None)
    led.put(o.book_key(oid), None)
    if o.expires:
        led.put(k_sched(o.expires - 1, b"o", oid), None)


def _unlock(led: Ledger, o: Order) -> None:
    """Give an order's lock back to its owner: credits (bid), or tokens to their source (ask)."""
    if o.is_bid:
        led.add_credits(o.issuer, o.owner, o.locked)
    elif o.source == SRC_FREE:
        led.add_free(o.owner, o.remaining)
    else:
        led.restore_vintage(o.owner, o.issuer, o.source, o.remaining)


def expire(led: Ledger, oid: bytes) -> bool:
    """The schedule's order expiry: unlock and remove (False if the order is already gone)."""
    o = get_order(led, oid)
    if o is None:
        return False
    _unlock(led, o)
    _remove(led, oid, o)
    return True


def cancel(led: Ledger, tx: Transaction) -> None:
    p = tx.payload
    assert isinstance(p, OrderCancel)
    o = get_order(led, p.order_id)
    if o is None:
        raise TxError("bad-order-unknown", "no such live order (filled, cancelled or expired)")
    if o.owner != tx.sender:
        raise TxError("bad-order-owner", "only the order's owner may cancel it")
    _unlock(led, o)
    _remove(led, p.order_id, o)


Fill = list[Any]  # [price, qty, payment, fee, maker]: a list, as the trade record encodes it


def _record_trades(led: Ledger, txid: bytes, issuer: bytes, taker: bytes, taker_side: int, fills: list[Fill]) -> None:
    """One trade record per taker order (``R height txid``: [issuer, taker, taker_side, [[price, qty, payment,
    fee, maker]...]]) and the velocity window's totals."""
    if not fills:
        return
    led.put(b"R" + be8(led.height) + txid, encode([issuer, taker, taker_side, fills]))
    vk = k_volume(led.height // VELOCITY_WINDOW)
    v = led.get(vk)
    vol = [as_int(x) for x in as_list(decode(v), 4)] if v is not None else [0, 0, 0, 0]
    led.put(
        vk,
        encode(
            [
                vol[0] + sum(f[1] for f in fills),
                vol[1] + sum(f[2] for f in fills),
                vol[2] + len(fills),
                vol[3] + sum(f[3] for f in fills),
            ]
        ),
    )


def place(led: Ledger, tx: Transaction) -> None:
    """Check, match and (GTC) rest an order. Raises TxError; the caller's Ledger keeps it atomic."""
    p = tx.payload
    assert isinstance(p, OrderPlace)
    me, h, oid = tx.sender, led.height, tx.txid
    iss = led.issuer(p.issuer)
    if iss is None:
        raise TxError("bad-order-issuer", "no such issuer")
    if p.expires and p.expires <= h:
        raise TxError("bad-order-expired", f"expiry {p.expires} <= height {h}")
    if led.get(k_order(oid)) is not None:
        raise TxError("bad-order-exists", "order id already used")
    expires = p.expires
    if p.side == ASK:
        if p.source == SRC_FREE:
            if led.free(me) < p.qty:
                raise TxError("bad-order-funds", f"free tokens {led.free(me)} < {p.qty}")
            led.add_free(me, -p.qty)
        else:
            vk = k_vintage(me, p.issuer, p.source)
            if p.source <= h or led.get_int(vk) < p.qty:
                raise TxError("bad-order-funds", f"vintage {p.source} of this issuer holds less than {p.qty}")
            led.add_int(vk, -p.qty)
            expires = min(expires or p.source, p.source)
    elif led.get_int(k_credit(p.issuer, me)) < value(p.qty, p.price):
        raise TxError("bad-order-funds", f"credits short of {value(p.qty, p.price)}")
    rem, work = p.qty, 0
    fills: list[Fill] = []
    taker_bid = p.side == BID
    bb = iss.buyback_bps if (not taker_bid and iss.buyback_bps and me != p.issuer and iss.buyback_bps >= p.price) else 0
    # the taker's credits, spend-only tokens and the issuer's fees move once, after the loop
    have = led.get_int(k_credit(p.issuer, me)) if taker_bid else 0
    taker_credits = taker_tokens = fees = 0
    for key, _ in led.scan(book_prefix(p.issuer, 1 - p.side)):
        if not rem or work >= MAX_FILLS:
            break
        moid = key[-32:]
        m = get_order(led, moid)
        assert m is not None
        if (m.price > p.price) if taker_bid else (m.price < p.price or bb > m.price):
            break
        work += 1
        if (m.expires and m.expires <= h) or m.owner == me:  # expired maker, or self-trade: cancel the maker
            _unlock(led, m)
            _remove(led, moid, m)
            continue
        f = min(rem, m.remaining)
        pay = value(m.remaining, m.price) - value(m.remaining - f, m.price)
        fee = taker_fee(pay, iss.fee_bps)
        if taker_bid:
            if have + taker_credits < pay + fee:
                raise TxError("bad-order-funds", f"credits {have + taker_credits} < {pay + fee}")
            taker_credits -= pay + fee - (fee if me == p.issuer else 0)
            led.add_credits(p.issuer, m.owner, pay)
            taker_tokens += f
        else:
            taker_credits += pay - fee
            led.add_int(k_spend_only(m.owner), f)
        fees += fee
        rem -= f
        m2 = evolve(m, remaining=m.remaining - f)
        if m2.remaining:
            led.put(k_order(moid), m2.encode())
        else:
            _remove(led, moid, m)
        fills.append([m.price, f, pay, fee, m.owner])
    if rem and bb and work < MAX_FILLS:
        work += 1
        pay = value(rem, bb)
        fee = taker_fee(pay, iss.fee_bps)
        led.mint_credits(p.issuer, me, pay - fee)
        led.add_deposit(p.issuer, rem)
        fills.append([bb, rem, pay, fee, p.issuer])
        rem = 0
    if taker_credits:
        led.add_credits(p.issuer, me, taker_credits)
    if taker_tokens:
        led.add_int(k_spend_only(me), taker_tokens)
    if fees and not (taker_bid and me == p.issuer):  # (an issuer buying in its own book kept its fees above)
        led.add_credits(p.issuer, p.issuer, fees)
    _record_trades(led, oid, p.issuer, me, p.side, fills)
    if not rem:
        return
    o = Order(p.issuer, me, p.side, p.price, p.qty, rem, p.source, expires, 0, h)
    if p.tif == IOC or work >= MAX_FILLS:
        if not taker_bid:
            _unlock(led, o)  # the unsold tokens go back to their source
        return
    assert p.tif == GTC
    if taker_bid:
        need = value(rem, p.price)
        have = led.get_int(k_credit(p.issuer, me))
        if have < need:
            raise TxError("bad-order-funds", f"credits {have} < {need} to rest the order")
        led.add_credits(p.issuer, me, -need)
    seq = dec_int(led.get(K_SEQ))
    led.put(K_SEQ, enc_int(seq + 1))
    o = evolve(o, seq=seq)
    led.put(k_order(oid), o.encode())
    led.put(o.book_key(oid), b"")
    if expires:
        led.put(k_sched(expires - 1, b"o", oid), b"")

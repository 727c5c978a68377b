"""`pouw issuer|subscription|market ...`: the economy's commands (docs/economy.md) over a node's HTTP API.

Every command takes ``--node URL``; those that sign take ``--wallet W``. Output is a readable summary,
or one JSON object with ``--json``. Token amounts are in tokens (decimal; ``--units`` for base units),
prices are fractions of face value (``0.95``: 0.95 credit per token), allocations in multiply-adds.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation

from chain.econtx import (
    ASK,
    BID,
    BPS,
    GTC,
    IOC,
    KIND_CREDIT_ISSUE,
    KIND_GRANT,
    KIND_ISSUER_DEPOSIT,
    KIND_ISSUER_REGISTER,
    KIND_ISSUER_WITHDRAW,
    KIND_ORDER_CANCEL,
    KIND_ORDER_PLACE,
    MODE_NAMES,
    SRC_FREE,
    CreditIssue,
    Grant,
    IssuerDeposit,
    IssuerRegister,
    IssuerWithdraw,
    OrderCancel,
    OrderPlace,
)
from chain.keys import PrivateKey, parse_address
from chain.tx import Transaction
from node.client.wallet import DEFAULT_NODE, fmt_amount, open_wallet, parse_amount
from node.client.worker import ApiError, NodeClient


def parse_price(text: str) -> int:
    """A price as a fraction of face value ("0.95") -> basis points (9500)."""
    try:
        v = Decimal(text) * BPS
    except InvalidOperation:
        raise ValueError(f"bad price {text!r}") from None
    if v != v.to_integral_value() or v <= 0:
        raise ValueError(f"price {text!r} must be positive with at most 4 decimals")
    return int(v)


def submit(node: str, key: PrivateKey, kind: int, payload, fee: int) -> dict:
    """Sign an economy transaction with the next pending nonce and submit it; returns the API answer."""
    c = NodeClient(node)
    net = c.call("GET", "/api/v1/network")
    acct = c.call("GET", f"/api/v1/accounts/{key.address.hex()}")
    tx = Transaction(kind, net["chain_id"], acct["pending_nonce"], key.pubkey, fee, payload).signed(key)
    return c.call("POST", "/api/v1/tx", {"tx": tx.encoded.hex()})


def _out(args, doc: dict, text: str) -> int:
    print(json.dumps(doc) if args.json else text)
    return 0


def _amount(args, v: str) -> int:
    return parse_amount(v, getattr(args, "units", False))


def _send(args, kind: int, payload, what: str) -> int:
    key = open_wallet(args.wallet)
    res = submit(args.node, key, kind, payload, args.fee)
    state = "accepted into the mempool" if res.get("accepted") else "not accepted"
    if res.get("accepted") and res.get("new") is False:
        state = "already pending"
    return _out(args, res, f"{what}: tx {res.get('txid', '?')} {state}")


# --- issuer ------------------------------------------------------------------------------------------
def cmd_issuer(args: argparse.Namespace) -> int:
    c = args.issuer_cmd
    if c == "register":
        return _send(
            args,
            KIND_ISSUER_REGISTER,
            IssuerRegister(MODE_NAMES.index(args.mode), args.vintage_periods, args.fee_bps, args.buyback_bps),
            "issuer register",
        )
    if c == "deposit":
        return _send(args, KIND_ISSUER_DEPOSIT, IssuerDeposit(_amount(args, args.amount)), "deposit")
    if c == "withdraw":
        return _send(args, KIND_ISSUER_WITHDRAW, IssuerWithdraw(_amount(args, args.amount)), "withdraw")
    if c == "credit":
        return _send(
            args, KIND_CREDIT_ISSUE, CreditIssue(parse_address(args.to), _amount(args, args.amount)), "credits issued"
        )
    a = parse_address(args.address) if args.address else open_wallet(args.wallet).address
    d = NodeClient(args.node).call("GET", f"/api/v1/economy/issuers/{a.hex()}")
    return _out(
        args,
        d,
        f"issuer {d['issuer']}: mode {d['mode']}, deposit {fmt_amount(d['deposit'])} tokens, "
        f"fee {d['fee_bps']} bps, buyback {d['buyback_bps'] / BPS:.4f}, vintages live "
        f"{d['vintage_periods']} periods, credits outstanding {fmt_amount(d['credits_outstanding'])}",
    )


# --- subscription -------------------------------------------------------------------------------------
def cmd_subscription(args: argparse.Namespace) -> int:
    if args.sub_cmd == "grant":
        return _send(
            args,
            KIND_GRANT,
            Grant(parse_address(args.to), args.allocation, args.period_blocks, args.periods, int(args.trial)),
            "grant",
        )
    a = parse_address(args.address) if args.address else open_wallet(args.wallet).address
    d = NodeClient(args.node).call("GET", f"/api/v1/economy/accounts/{a.hex()}")
    lines = [
        f"account {d['address']} at height {d['height']}: free {fmt_amount(d['free'])}, spend-only "
        f"{fmt_amount(d['spend_only'])}, vintage {fmt_amount(d['vintage_total'])}, allocation left "
        f"{fmt_amount(d['allocation_tokens'])} tokens"
    ]
    for g in d["grants"]:
        lines.append(
            f"  grant {g['grant_id'][:16]} from {g['issuer'][:12]}: {g['allocation']} MACs/period, "
            f"{fmt_amount(g['remaining'])} left until height {g['period_end']}, {g['periods_left']} more "
            f"period(s){' (trial)' if g['trial'] else ''}"
        )
    for v in d["vintages"]:
        lines.append(f"  vintage of {v['issuer'][:12]}: {fmt_amount(v['amount'])} usable below height {v['expiry']}")
    for i, x in d["credits"].items():
        if x:
            lines.append(f"  credits of {i[:12]}: {fmt_amount(x)}")
    return _out(args, d, "\n".join(lines))


# --- market -----------------------------------------------------------------------------------------------
def cmd_market(args: argparse.Namespace) -> int:
    c = args.market_cmd
    if c in ("buy", "sell"):
        side = BID if c == "buy" else ASK
        src = SRC_FREE if side == BID or not args.vintage else args.vintage
        p = OrderPlace(
            parse_address(args.issuer),
            side,
            parse_price(args.price),
            _amount(args, args.qty),
            IOC if args.ioc else GTC,
            args.expires,
            src,
        )
        return _send(args, KIND_ORDER_PLACE, p, f"{c} order (order id = txid)")
    if c == "cancel":
        return _send(args, KIND_ORDER_CANCEL, OrderCancel(bytes.fromhex(args.order)), "cancel")
    iss = parse_address(args.issuer)
    cl = NodeClient(args.node)
    if c == "book":
        d = cl.call("GET", f"/api/v1/economy/market/{iss.hex()}/book?limit={args.depth}")
        lines = [f"book of {d['issuer']} at height {d['height']} (buyback at {d['buyback_price'] / BPS:.4f})"]
        for half in ("asks", "bids"):
            lines.append(f"  {half}:")
            for lv in d[half]["levels"][::-1] if half == "asks" else d[half]["levels"]:
                lines.append(f"    {lv['price'] / BPS:.4f}  {fmt_amount(lv['qty'])}")
        return _out(args, d, "\n".join(lines))
    d = cl.call("GET", f"/api/v1/economy/market/{iss.hex()}/trades?limit={args.limit}")
    lines = [
        f"h={t['height']} {t['taker_side']:>3} {fmt_amount(t['qty'])} @ {t['price'] / BPS:.4f} fee {t['fee']}"
        for t in d["trades"]
    ]
    return _out(args, d, "\n".join(lines) or "no trades")


def _guard(fn):
    def run(args):
        try:
            return fn(args)
        except ValueError as e:
            print(str(e), file=sys.stderr)
            return 2
        except ApiError as e:
            print(json.dumps({"error": {"code": e.code, "message": e.message}}))
            return 1

    return run


def add_arguments(sub) -> None:
    def common(p, sign: bool = True):
        p.add_argument("--node", default=DEFAULT_NODE)
        p.add_argument("--wallet", default="wallet.json")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        if sign:
            p.add_argument("--fee", type=int, default=1000, help="fee in base units (default 1000)")
            p.add_argument("--units", action="store_true", help="amounts are in base units")

    i = sub.add_parser("issuer", help="compute-token issuers: register, deposit, withdraw, credit, show")
    isub = i.add_subparsers(dest="issuer_cmd", required=True)
    p = isub.add_parser("register", help="register the wallet as an issuer")
    common(p)
    p.add_argument("--mode", choices=MODE_NAMES, default="mint", help="what unused allocation becomes")
    p.add_argument("--vintage-periods", type=int, default=3, help="periods a minted vintage lives")
    p.add_argument("--fee-bps", type=int, default=30, help="taker fee in basis points")
    p.add_argument("--buyback-bps", type=int, default=9000, help="buyback bid, basis points of face value (0: none)")
    for name in ("deposit", "withdraw"):
        p = isub.add_parser(name, help=f"{name} tokens (issuer's free balance <-> deposit)")
        common(p)
        p.add_argument("--amount", required=True)
    p = isub.add_parser("credit", help="issue platform credits to an account")
    common(p)
    p.add_argument("--to", required=True)
    p.add_argument("--amount", required=True)
    p = isub.add_parser("show", help="an issuer's record")
    common(p, sign=False)
    p.add_argument("--address", default=None)
    i.set_defaults(func=_guard(cmd_issuer))

    s = sub.add_parser("subscription", help="grants of compute allocations: grant, show")
    ssub = s.add_subparsers(dest="sub_cmd", required=True)
    p = ssub.add_parser("grant", help="grant a subscriber an allocation (the wallet is the issuer)")
    common(p)
    p.add_argument("--to", required=True, help="subscriber address")
    p.add_argument("--allocation", type=int, required=True, help="multiply-adds per period")
    p.add_argument("--period-blocks", type=int, required=True)
    p.add_argument("--periods", type=int, default=1)
    p.add_argument("--trial", action="store_true", help="spend-only: never mints at period end")
    p = ssub.add_parser("show", help="an account's allocations, vintages, spend-only tokens and credits")
    common(p, sign=False)
    p.add_argument("--address", default=None)
    s.set_defaults(func=_guard(cmd_subscription))

    m = sub.add_parser("market", help="order books: book, buy, sell, cancel, trades")
    msub = m.add_subparsers(dest="market_cmd", required=True)
    for name in ("buy", "sell"):
        p = msub.add_parser(name, help=f"{name} tokens for the issuer's credits (limit order)")
        common(p)
        p.add_argument("--issuer", required=True)
        p.add_argument("--qty", required=True, help="tokens")
        p.add_argument("--price", required=True, help="credits per token as a fraction of face value, e.g. 0.95")
        p.add_argument("--ioc", action="store_true", help="immediate or cancel (default: good till cancelled)")
        p.add_argument("--expires", type=int, default=0, help="first height at which the order is gone (0: none)")
        if name == "sell":
            p.add_argument("--vintage", type=int, default=0, help="sell a vintage (its expiry height) of this issuer")
    p = msub.add_parser("cancel", help="cancel an order")
    common(p)
    p.add_argument("--order", required=True, help="order id (the placing tx's txid)")
    p = msub.add_parser("book", help="an issuer's order book")
    common(p, sign=False)
    p.add_argument("--issuer", required=True)
    p.add_argument("--depth", type=int, default=10)
    p = msub.add_parser("trades", help="recent trades in an issuer's book")
    common(p, sign=False)
    p.add_argument("--issuer", required=True)
    p.add_argument("--limit", type=int, default=20)
    m.set_defaults(func=_guard(cmd_market))

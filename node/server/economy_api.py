"""Read-only HTTP endpoints of the compute-token economy (docs/api.md §Economy, docs/economy.md).

Registered by node/server/api.py's `make_app` through `economy_routes(r, node)`. Everything here reads the
tip state of `node.chain` (ChainState: get_econ / scan_econ); nothing writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from chain import economy as E
from chain.econtx import ASK, BID, SIDE_NAMES
from chain.encoding import as_list, decode
from chain.market import Order, book_prefix, k_order
from node.server.econstats import velocity

if TYPE_CHECKING:
    from node.server.interfaces import NodeView

API = "/api/v1"


def _err(status: int, code: str, message: str):
    from node.server.apierror import ApiError

    return ApiError(status, code, message)


def _hex(v: Any, name: str, n: int) -> bytes:
    try:
        b = bytes.fromhex(str(v).removeprefix("0x"))
    except ValueError:
        raise _err(400, "bad-param", f"{name} must be hex") from None
    if len(b) != n:
        raise _err(400, "bad-param", f"{name} must be {n} bytes")
    return b


def _limit(request, default: int, hi: int) -> int:
    try:
        return min(hi, max(1, int(request.query.get("limit", str(default)))))
    except ValueError:
        raise _err(400, "bad-param", "limit must be an integer") from None


def issuer_json(cs, addr: bytes, rec: E.Issuer) -> dict:
    d = rec.to_json(addr)
    m, b = E.credit_supply(cs.get_econ(E.k_csupply(addr)))
    d["credits_minted"], d["credits_burned"] = m, b
    d["credits_outstanding"] = m - b
    return d


def book_json(cs, issuer: bytes, depth: int) -> dict:
    sides = {}
    for side in (BID, ASK):
        orders: list[dict[str, Any]] = []
        levels: dict[int, int] = {}
        for key, _ in cs.scan_econ(book_prefix(issuer, side)):
            oid = key[-32:]
            o = Order.decode(cs.get_econ(k_order(oid)))
            if o.price not in levels and len(levels) >= depth:
                break
            levels[o.price] = levels.get(o.price, 0) + o.remaining
            orders.append(o.to_json(oid))
        sides[SIDE_NAMES[side] + "s"] = {
            "levels": [{"price": p, "qty": q} for p, q in levels.items()],
            "orders": orders,
        }
    rec = cs.get_econ(E.k_issuer(issuer))
    bb = E.Issuer.decode(rec).buyback_bps if rec is not None else 0
    return {"issuer": issuer.hex(), "height": cs.height, "buyback_price": bb, **sides}


def trades_json(cs, issuer: bytes | None, limit: int) -> list[dict]:
    out = []
    for key, v in cs.scan_econ(b"R"):
        iss, taker, side, fills = as_list(decode(v), 4)
        if issuer is not None and iss != issuer:
            continue
        for n, (price, qty, pay, fee, maker) in enumerate(fills):
            buyer, seller = (taker, maker) if side == BID else (maker, taker)
            out.append(
                {
                    "height": int.from_bytes(key[1:9], "big"),
                    "txid": key[9:41].hex(),
                    "fill": n,
                    "issuer": iss.hex(),
                    "price": price,
                    "qty": qty,
                    "payment": pay,
                    "fee": fee,
                    "buyer": buyer.hex(),
                    "seller": seller.hex(),
                    "taker_side": SIDE_NAMES[side],
                }
            )
    return out[::-1][:limit]


def supply_json(cs) -> dict:
    st = cs.memory_state()
    escrow, bonds = st.locked()
    t = E.econ_totals(st.econ.items())
    free = st.total_balance()
    return {
        "height": cs.height,
        "minted": st.supply.minted,
        "burned": st.supply.burned,
        "free": free,
        "job_escrow": escrow,
        "job_bonds": bonds,
        "spend_only": t.spend_only,
        "vintage": t.vintage,
        "locked_in_asks": t.ask_locked,
        "deposits": t.deposits,
        "reserved_in_grants": t.grants,
        "conserved": free + escrow + bonds + t.tokens == st.supply.minted - st.supply.burned,
        "credits": {
            i.hex(): {"balances": c[0], "locked_in_bids": c[1], "minted": c[2], "burned": c[3]}
            for i, c in (t.credits or {}).items()
        },
    }


def economy_routes(r: web.RouteTableDef, node: NodeView) -> None:
    """Add the economy's GET routes to the API's route table."""

    def cs():
        return node.chain

    async def issuers(request):
        c = cs()
        out = [issuer_json(c, k[1:], E.Issuer.decode(v)) for k, v in c.scan_econ(b"I")]
        return web.json_response({"height": c.height, "issuers": out})

    async def issuer(request):
        c = cs()
        a = _hex(request.match_info["addr"], "issuer", 20)
        v = c.get_econ(E.k_issuer(a))
        if v is None:
            raise _err(404, "issuer-not-found", "no issuer with this address")
        return web.json_response(issuer_json(c, a, E.Issuer.decode(v)))

    async def grant(request):
        c = cs()
        gid = _hex(request.match_info["id"], "grant id", 32)
        v = c.get_econ(E.k_grant(gid))
        if v is None:
            raise _err(404, "grant-not-found", "no grant with this id")
        return web.json_response(E.GrantRec.decode(v).to_json(gid))

    async def account_economy(request):
        c = cs()
        a = _hex(request.match_info["addr"], "address", 20)
        d = E.holdings(c, c.get_account(a).balance, a)
        d["credits"] = {k[1:].hex(): E.credits_of(c, k[1:], a) for k, _ in c.scan_econ(b"I")}
        d["orders"] = [o.to_json(k[1:]) for k, v in c.scan_econ(b"O") if (o := Order.decode(v)).owner == a]
        d["height"] = c.height
        return web.json_response(d)

    async def order(request):
        c = cs()
        oid = _hex(request.match_info["id"], "order id", 32)
        v = c.get_econ(k_order(oid))
        if v is None:
            raise _err(404, "order-not-found", "no live order with this id (filled, cancelled or expired)")
        return web.json_response(Order.decode(v).to_json(oid))

    async def book(request):
        c = cs()
        a = _hex(request.match_info["issuer"], "issuer", 20)
        if c.get_econ(E.k_issuer(a)) is None:
            raise _err(404, "issuer-not-found", "no issuer with this address")
        return web.json_response(book_json(c, a, _limit(request, 20, 500)))

    async def trades(request):
        c = cs()
        a = _hex(request.match_info["issuer"], "issuer", 20)
        return web.json_response({"issuer": a.hex(), "trades": trades_json(c, a, _limit(request, 50, 1000))})

    async def supply(request):
        return web.json_response(supply_json(cs()))

    async def vel(request):
        c = cs()
        return web.json_response(
            {"height": c.height, "window_blocks": E.VELOCITY_WINDOW, "windows": velocity(c, _limit(request, 10, 100))}
        )

    r.get(API + "/economy/issuers")(issuers)
    r.get(API + "/economy/issuers/{addr}")(issuer)
    r.get(API + "/economy/grants/{id}")(grant)
    r.get(API + "/economy/accounts/{addr}")(account_economy)
    r.get(API + "/economy/orders/{id}")(order)
    r.get(API + "/economy/market/{issuer}/book")(book)
    r.get(API + "/economy/market/{issuer}/trades")(trades)
    r.get(API + "/economy/supply")(supply)
    r.get(API + "/economy/velocity")(vel)

"""The explorer: a page at ``/`` (plain HTML, CSS and JavaScript from node/server/explorer/static, nothing
fetched from elsewhere) and the read-only lookups it needs (docs/api.md §Explorer).

Registered by node/server/api.py's `make_app` through `explorer_routes(r, node)`. Every lookup is answered
from the in-memory block index or the persisted indexes (chain/indexes.py): no request scans the chain.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from chain import indexes
from chain.block import Block
from chain.difficulty import block_work
from chain.errors import ValidationError
from chain.keys import parse_address
from chain.tx import KIND_JOB_SUBMIT

if TYPE_CHECKING:
    from node.server.interfaces import NodeView

API = "/api/v1"
STATIC = Path(__file__).parent / "explorer" / "static"
ASSETS = {"index.html": "text/html", "explorer.js": "application/javascript", "explorer.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MAX_CHART_BLOCKS = 2000
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(r"(0x)?[0-9a-fA-F]+")


def _err(status: int, code: str, message: str):
    from node.server.apierror import ApiError

    return ApiError(status, code, message)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    v = request.query.get(name)
    if v is None:
        return default
    if not _DIGITS.fullmatch(v):
        raise _err(400, "bad-param", f"{name} must be a non-negative integer")
    return min(hi, max(lo, int(v)))


def resolve_block(node: NodeView, ident: str) -> Block:
    """A stored block by `tip`, active-chain height or hash (any branch); 404 block-not-found."""
    cs = node.chain
    if ident == "tip":
        h: bytes | None = cs.tip.hash
    elif _DIGITS.fullmatch(ident):
        h = cs.block_hash_at(int(ident))
    else:
        try:
            h = bytes.fromhex(ident.removeprefix("0x"))
        except ValueError:
            raise _err(400, "bad-param", "block id must be a height, a 32-byte hex hash or tip") from None
        if len(h) != 32:
            raise _err(400, "bad-param", "block id must be a height, a 32-byte hex hash or tip")
    b = cs.get_block(h) if h is not None else None
    if b is None:
        raise _err(404, "block-not-found", f"block {ident[:80]} not found")
    return b


def paid_job_of(node: NodeView, b: Block) -> bytes | None:
    """The job whose operands the block's proof mined (a paid job), or None (a filler job)."""
    job = b.header.job
    for j in indexes.jobs_with_operands(node.chain.store, job.h_a, job.h_b):
        rec = node.chain.get_job(j)
        if rec is not None and (rec.m, rec.k, rec.n) == (job.m, job.k, job.n):
            return j
    return None


def proof_json(node: NodeView, b: Block) -> dict:
    """The block's useful-work proof, decoded: job shape and commitments, paid job or filler, the winning
    tile, and its ticket against the work-scaled target (no verification: see `verify_json`)."""
    from pouw.proof import TileProof
    from pouw.ticket import win_threshold

    h = b.header
    out: dict = {
        "hash": b.hash.hex(),
        "height": h.height,
        "job": {
            "m": h.job.m,
            "k": h.job.k,
            "n": h.job.n,
            "macs": h.job.macs,
            "h_a": h.job.h_a.hex(),
            "h_b": h.job.h_b.hex(),
        },
        "target": "%064x" % h.target,
        "work": block_work(h.target),
        "proof_bytes": len(h.proof),
    }
    if h.height == 0:
        out.update(kind="genesis", proof=None)
        return out
    jid = paid_job_of(node, b)
    out["kind"] = "paid" if jid is not None else "filler"
    out["paid_job"] = jid.hex() if jid is not None else None
    try:
        p = TileProof.decode(h.proof)
    except Exception as e:  # a stored header passed its proof check; report rather than fail
        out["proof"] = {"error": f"undecodable proof: {type(e).__name__}"}
        return out
    params = node.chain.params
    tile_work = params.tile_work(h.job.k)
    threshold = win_threshold(h.target, tile_work)
    ticket = int.from_bytes(p.ticket, "big")
    tiles = (h.job.m // params.tile_h) * (h.job.n // params.tile_w) if params.tile_h and params.tile_w else 0
    out["proof"] = {
        "tile": {
            "ti": p.ti,
            "tj": p.tj,
            "h": p.h,
            "w": p.w,
            "k": p.k,
            "rows": [p.ti * p.h, (p.ti + 1) * p.h],
            "cols": [p.tj * p.w, (p.tj + 1) * p.w],
        },
        "tiles": tiles,
        "job_key": p.job_key.hex(),
        "ticket": p.ticket.hex(),
        "threshold": "%064x" % threshold,  # more digits when target × tile work >= 2^256
        "tile_work": tile_work,
        "ticket_below_threshold": ticket < threshold,
        "ticket_fraction": ticket / threshold if threshold else None,
        "merkle_path_a": len(p.path_a),
        "merkle_path_b": len(p.path_b),
    }
    return out


def verify_json(node: NodeView, b: Block) -> dict:
    """Re-check the block's proof now (chain.validation.check_header_proof): the verdict and its reason."""
    from chain.validation import check_header_proof

    h = b.header
    t0 = time.perf_counter()
    if h.height == 0:
        ok, reason, detail = b.hash == node.chain.genesis.hash, None, "genesis: no proof, identified by its hash"
    else:
        try:
            check_header_proof(h, node.cfg, node.chain.params)
            ok, reason, detail = True, None, "the winning tile's openings, noise, transcript and ticket check out"
        except ValidationError as e:
            ok, reason, detail = False, e.reason, e.detail or e.reason
    return {
        "hash": b.hash.hex(),
        "height": h.height,
        "valid": ok,
        "reason": reason,
        "detail": detail,
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2),
        "checked_at": int(time.time()),
    }


def search(node: NodeView, q: str) -> dict | None:
    """What a search string names: a height, block hash, job id, tx id or address; None for nothing."""
    cs = node.chain
    q = q.strip()
    if _DIGITS.fullmatch(q):
        return {"kind": "block", "id": q} if int(q) <= cs.height else None
    if not _HEX.fullmatch(q):
        return None
    x = q.lower().removeprefix("0x")
    if len(x) == 64:
        h = bytes.fromhex(x)
        if h in cs.index:
            return {"kind": "block", "id": x}
        if cs.get_job(h) is not None:
            return {"kind": "job", "id": x}
        t = node.mempool.get(h)
        if t is not None and t.kind == KIND_JOB_SUBMIT:  # a pending submit: its txid is the job id
            return {"kind": "job", "id": x}
        if t is not None or indexes.tx_block(cs.store, h) is not None:
            return {"kind": "tx", "id": x}
        return None
    if len(x) == 40:
        return {"kind": "address", "id": x}
    return None


def history_json(node: NodeView, addr: bytes, before: int | None, limit: int) -> dict:
    cs = node.chain
    out: list[dict[str, Any]] = []
    more = False
    for e in indexes.history(cs.store, addr, before):
        if len(out) == limit:
            more = True
            break
        out.append(
            {
                "height": e.height,
                "block": cs.block_hash_at(e.height).hex(),  # type: ignore[union-attr]
                "balance_before": e.balance_before,
                "balance_after": e.balance_after,
                "delta": e.balance_after - e.balance_before,
                "nonce": e.nonce,
                "txs": [t.hex() for t in e.txids],
            }
        )
    return {
        "address": addr.hex(),
        "height": cs.height,
        "entries": out,
        "next_before": out[-1]["height"] if more else None,
    }


def blockstats_json(node: NodeView, n: int) -> dict:
    """Interval and work rate of the last `n` active blocks (from the in-memory index). Block 1 is left
    out: its interval runs from the network's launch date, not from a mined block."""
    cs = node.chain
    top = cs.height
    pts: list[dict[str, Any]] = []
    for height in range(max(2, top - n + 1), top + 1):
        e, p = cs.index[cs.chain[height]], cs.index[cs.chain[height - 1]]
        interval = e.timestamp - p.timestamp
        work = block_work(e.target)
        pts.append(
            {
                "height": height,
                "timestamp": e.timestamp,
                "interval": interval,
                "work": work,
                "work_rate": work / max(1, interval),
            }
        )
    span = pts[-1]["timestamp"] - cs.index[cs.chain[pts[0]["height"] - 1]].timestamp if pts else 0
    return {
        "height": top,
        "blocks": len(pts),
        "points": pts,
        "mean_interval": span / len(pts) if pts else None,
        "network_work_rate": sum(p["work"] for p in pts) / span if span > 0 else None,
        "unit": "work_rate: expected multiply-adds per second (block work / interval)",
    }


def explorer_routes(r: web.RouteTableDef, node: NodeView) -> None:
    """Add the explorer page and its lookups to the API's route table."""
    verify_slots = asyncio.Semaphore(2)  # proof re-checks run in threads, two at a time

    def asset(name: str) -> web.Response:
        return web.Response(
            body=(STATIC / name).read_bytes(),
            content_type=ASSETS[name],
            headers={
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
                "Referrer-Policy": "no-referrer",
            },
        )

    @r.get("/")
    async def index(request):
        return asset("index.html")

    @r.get("/explorer/{name}")
    async def static(request):
        name = request.match_info["name"]
        if name not in ASSETS:
            raise _err(404, "not-found", f"no explorer file {name[:80]}")
        return asset(name)

    @r.get(API + "/blocks/{id}/proof")
    async def block_proof(request):
        return web.json_response(proof_json(node, resolve_block(node, request.match_info["id"])))

    @r.get(API + "/blocks/{id}/verify")
    async def block_verify(request):
        b = resolve_block(node, request.match_info["id"])
        async with verify_slots:
            return web.json_response(await asyncio.to_thread(verify_json, node, b))

    @r.get(API + "/search")
    async def do_search(request):
        q = request.query.get("q", "")[:200]
        hit = search(node, q)
        if hit is None:
            raise _err(404, "not-found", f"nothing matches {q[:80]!r} (a height, block hash, tx id, job id or address)")
        return web.json_response({"query": q, **hit})

    @r.get(API + "/accounts/{address}/history")
    async def account_history(request):
        try:
            a = parse_address(request.match_info["address"])
        except ValueError as e:
            raise _err(400, "bad-address", str(e)) from None
        before = request.query.get("before")
        b = _int_param(request, "before", 0, 0, 1 << 62) if before is not None else None
        return web.json_response(history_json(node, a, b, _int_param(request, "limit", 50, 1, 500)))

    @r.get(API + "/blockstats")
    async def blockstats(request):
        return web.json_response(blockstats_json(node, _int_param(request, "blocks", 120, 1, MAX_CHART_BLOCKS)))

"""HTTP API (JSON under /api/v1), Prometheus text at /metrics, and the p2p websocket at /p2p.

Errors are ``{"error": {"code": "<stable-code>", "message": "<text>"}}`` with a 4xx/5xx status. Request
bodies are limited by the app's `client_max_size`. Documented in docs/api.md and docs/openapi.yaml.

Every request passes `security_middleware` (docs/operations.md): a browser `Origin` not configured is
refused (403 origin-not-allowed) and no CORS grant is sent; API requests must name an IP address,
``localhost`` or a configured name in `Host` (403 host-not-allowed: DNS rebinding); a request that writes
(POST/PUT/PATCH/DELETE) with a body must say ``Content-Type: application/json`` (blobs:
``application/octet-stream``; else 415 unsupported-media-type), and when the node has an API token it must
carry ``Authorization: Bearer <token>`` (else 401 unauthorized).
"""
from __future__ import annotations

import hmac
import ipaddress
import math
import time
from typing import TYPE_CHECKING

from aiohttp import web

from chain.block import Block
from chain.difficulty import block_work
from chain.keys import parse_address
from chain.validation import expected_target
from node.apierror import ApiError
from node.apiargs import API, UINT, body_json, hexarg, query_int, tx_json
from node.apiargs import json_response as _json
from node.blobs_api import blob_routes
from node.jobs_api import job_routes
from node.tx_api import tx_routes

if TYPE_CHECKING:
    from node.node import Node

MAX_WORK_RATE = 1e21       # MAC/s a remote worker may report (far above any device; finite JSON)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except web.HTTPRequestEntityTooLarge as e:
        return ApiError(413, "body-too-large", e.text or "request body too large").response()
    except web.HTTPNotFound:
        return ApiError(404, "not-found", f"no route {request.path}").response()
    except web.HTTPMethodNotAllowed as e:
        resp = ApiError(405, "method-not-allowed", f"{request.method} not allowed on {request.path}").response()
        resp.headers["Allow"] = ", ".join(sorted(e.allowed_methods))
        return resp
    except web.HTTPException:
        raise
    except Exception as e:  # defensive: never leak a traceback as HTML
        import logging
        logging.getLogger("pouw.api").exception("API error on %s", request.path)
        return ApiError(500, "internal", type(e).__name__).response()


def _host_allowed(host: str | None, allowed: list[str]) -> bool:
    """Host header check (DNS rebinding): IP literals, localhost and configured names ("*": any)."""
    if not host or "*" in allowed:
        return True
    if host.startswith("["):           # [IPv6]:port
        name = host[1:host.find("]")]
    elif host.count(":") == 1:         # name:port or IPv4:port
        name = host.partition(":")[0]
    else:                              # bare name or IPv4
        name = host
    name = name.lower().rstrip(".")
    if name == "localhost" or name in (a.lower() for a in allowed):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def security_middleware(node: "Node", max_body: int):
    """Origin / CORS, Host, content type and token checks (module docstring); a declared body over the
    route's limit (`max_body`, blobs: the blob cap) is refused with 413 before any of it is read."""

    @web.middleware
    async def check(request: web.Request, handler):
        conf = node.conf
        origin = request.headers.get("Origin")
        origin_ok = origin is not None and (origin in conf.api_cors_origins or "*" in conf.api_cors_origins)
        if origin is not None and not origin_ok:
            raise ApiError(403, "origin-not-allowed", f"origin {origin[:100]} is not allowed (see --api-cors-origin)")
        if request.path != "/p2p" and not _host_allowed(request.headers.get("Host"), conf.api_allowed_hosts):
            raise ApiError(403, "host-not-allowed", "Host must be an IP address, localhost or a name set with "
                                                    "--api-allow-host")
        if request.method == "OPTIONS" and origin_ok:
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Methods": "GET, POST, PUT",
                "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Blob-Hash",
                "Access-Control-Max-Age": "600"})
        if request.method in WRITE_METHODS:
            blob = request.path.startswith(API + "/blobs")
            limit = node.blobs.max_bytes if blob else max_body
            if request.content_length is not None and request.content_length > limit:
                resp = ApiError(413, "blob-too-large" if blob else "body-too-large",
                                f"{request.content_length} bytes > {limit}").response()
                resp.force_close()  # do not keep the connection for the rest of the body
                return resp
            token = node.api_token
            if token:
                got = request.headers.get("Authorization", "")
                if not (got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), token.encode())):
                    resp = ApiError(401, "unauthorized", "this endpoint needs Authorization: Bearer <token> "
                                                         "(the node's --api-token or its .cookie file)").response()
                    resp.headers["WWW-Authenticate"] = 'Bearer realm="pouw"'
                    return resp
            ctype = request.headers.get("Content-Type")
            if request.body_exists or ctype is not None:
                want = "application/octet-stream" if request.path.startswith(API + "/blobs") else "application/json"
                if (ctype or "").split(";")[0].strip().lower() != want:
                    raise ApiError(415, "unsupported-media-type", f"Content-Type must be {want}")
        resp = await handler(request)
        if origin_ok:
            resp.headers["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
            resp.headers["Vary"] = "Origin"
        return resp

    return check


def block_json(node: "Node", b: Block, with_txs: bool = True) -> dict:
    h = b.header
    e = node.chain.index.get(b.hash)
    d = {"hash": b.hash.hex(), "height": h.height, "prev": h.prev_hash.hex(), "timestamp": h.timestamp,
         "target": "%064x" % h.target, "work": block_work(h.target), "chainwork": e.chainwork if e else None,
         "miner": h.miner.hex(), "tx_root": h.tx_root.hex(), "state_root": h.state_root.hex(),
         "job": {"m": h.job.m, "k": h.job.k, "n": h.job.n, "h_a": h.job.h_a.hex(), "h_b": h.job.h_b.hex()},
         "nonce": h.nonce,
         "proof_bytes": len(h.proof), "size": len(b.encoded), "active": node.chain.is_active(b.hash),
         "confirmations": node.chain.height - h.height + 1 if node.chain.is_active(b.hash) else 0,
         "tx_count": len(b.txs)}
    if with_txs:
        d["txs"] = [tx_json(t) for t in b.txs]
    return d


def status_json(node: "Node") -> dict:
    cs = node.chain
    tip = cs.tip
    nxt = expected_target(cs.cfg, cs.next_parent_info())
    miner = node.miner
    now = time.time()
    return {
        "network": cs.cfg.name, "chain_id": cs.cfg.chain_id, "genesis": cs.genesis.hash.hex(),
        "height": cs.height, "tip": tip.hash.hex(), "tip_time": tip.timestamp,
        "chainwork": tip.chainwork, "difficulty": block_work(nxt),
        "peers": len(node.p2p.ready_peers), "node_id": node.node_key.pubkey.hex(),
        "mempool": {"size": len(node.mempool), "bytes": node.mempool.bytes},
        "work_rate": node.work_rate(),
        "work_rate_unit": "multiply-adds of mined jobs per second (60 s window)",
        "mining": {"enabled": bool(miner and miner.enabled),
                   "state": ("storage-fault" if not node.storage.ok else miner.state) if miner else "off",
                   "device": miner.device.spec if miner else None,
                   "device_state": miner.device.state if miner else None,
                   "device_faults": miner.device.total_faults if miner else 0,
                   "address": node.mining_address.hex(), "blocks_found": miner.blocks_found if miner else 0,
                   "local_work_rate": miner.rate.rate() if miner else 0.0,
                   "filler_shape": list(miner.filler.shape) if miner else None,
                   **dict(zip(("mined_macs", "paid_macs", "useful_fraction"),
                              miner.useful_work() if miner else (0, 0, 0.0))),
                   "workers": [{"id": k, "work_rate": v["work_rate"], "device": v.get("device"),
                                "last_seen_s": round(now - v["seen"], 1)}
                               for k, v in node.workers.items() if now - v["seen"] < 300]},
        "sync": node.sync.progress(),
        "storage": node.storage.json(),
        "uptime_s": round(now - node.started_at, 1),
    }


def make_p2p_app(node: "Node") -> web.Application:
    """The public peer listener when the API has its own: the websocket and local blob reads only."""
    app = web.Application(client_max_size=64 * 1024,
                          middlewares=[errors_middleware, security_middleware(node, 64 * 1024)])

    async def p2p(request):
        return await node.p2p.handle_inbound(request)

    async def blob(request):  # peers fetch job blobs from a node's p2p address (Node.fetch_blob)
        try:
            h = bytes.fromhex(request.match_info["hash"])
        except ValueError:
            h = b""
        data = node.blobs.get(h) if len(h) == 32 else None
        if data is None:
            raise ApiError(404, "blob-not-found", "no such blob here")
        return web.Response(body=data, content_type="application/octet-stream", headers={"X-Blob-Hash": h.hex()})

    app.router.add_get("/p2p", p2p)
    app.router.add_get(API + "/blobs/{hash}", blob)
    return app


def make_app(node: "Node", p2p: bool = True) -> web.Application:
    """The API app; with `p2p` it also serves the peer websocket (one shared listener)."""
    max_body = node.conf.api_max_body or (2 * node.cfg.max_header_bytes + 64 * 1024)
    app = web.Application(client_max_size=max_body, middlewares=[errors_middleware, security_middleware(node, max_body)])
    r = web.RouteTableDef()

    @r.get(API + "/status")
    async def status(request):
        return _json(status_json(node))

    @r.get(API + "/network")
    async def network(request):
        cfg = node.cfg
        return _json({"name": cfg.name, "chain_id": cfg.chain_id, "genesis": node.chain.genesis.hash.hex(),
                      "target_block_time": cfg.target_block_time, "config_toml": cfg.source})

    @r.get(API + "/blocks/{id}")
    async def get_block(request):
        ident = request.match_info["id"]
        if ident == "tip":
            h = node.chain.tip.hash
        elif UINT.fullmatch(ident):
            h = node.chain.block_hash_at(int(ident))
            if h is None:
                raise ApiError(404, "block-not-found", f"no block at height {ident}")
        else:
            h = hexarg(ident, "block id", 32)
        b = node.chain.get_block(h)
        if b is None:
            raise ApiError(404, "block-not-found", f"block {ident} not found")
        if request.query.get("format") == "raw":
            return _json({"hash": h.hex(), "raw": b.encoded.hex()})
        return _json(block_json(node, b))

    @r.get(API + "/blocks")
    async def list_blocks(request):
        limit = min(100, max(1, query_int(request, "limit", 20)))
        top = query_int(request, "from", node.chain.height)
        out = []
        for height in range(min(top, node.chain.height), max(-1, top - limit), -1):
            b = node.chain.get_block(node.chain.block_hash_at(height))  # type: ignore[arg-type]
            out.append(block_json(node, b, with_txs=False))  # type: ignore[arg-type]
        return _json({"blocks": out})

    @r.get(API + "/chaintips")
    async def chaintips(request):
        return _json({"tips": [{"hash": t.hash.hex(), "height": t.height, "branchlen": t.branchlen,
                                "status": t.status} for t in node.chain.chain_tips()[:100]]})

    tx_routes(r, node)  # transactions, accounts, mempool: node/tx_api.py

    @r.get(API + "/peers")
    async def peers(request):
        return _json({"peers": [p.info() for p in node.p2p.ready_peers],
                      "known": sorted(node.book.addrs), "banned": len([1 for v in node.book.bans.values() if v > time.time()])})

    @r.post(API + "/mining/work")
    async def mining_work(request):
        doc = await body_json(request)
        addr = doc.get("address") or ""
        if not isinstance(addr, str):
            raise ApiError(400, "bad-address", "address must be a string")
        try:
            miner = parse_address(addr) if addr else node.mining_address
        except ValueError as e:
            raise ApiError(400, "bad-address", str(e)) from None
        wid = str(doc.get("worker", ""))[:32]
        if wid:
            rate = doc.get("work_rate", 0.0)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) \
                    or not 0 <= rate <= MAX_WORK_RATE:
                raise ApiError(400, "bad-param", f"work_rate must be a number from 0 to {MAX_WORK_RATE:g}")
            rate = float(rate)
            if wid in node.workers or len(node.workers) < 1000:
                node.workers[wid] = {"work_rate": rate, "seen": time.time(), "device": str(doc.get("device", ""))[:32],
                                     "address": miner.hex()}
        if node.sync.syncing:
            raise ApiError(503, "syncing", "node is syncing; no work until it reaches the best chain")
        w = node.templates.for_worker(wid if wid in node.workers else "", miner)
        h = w.template.header
        cfg = node.cfg
        return _json({"template_id": w.id, "network": cfg.name, "height": h.height, "prev": h.prev_hash.hex(),
                      "target": "%064x" % h.target, "work": block_work(h.target), "header": h.encoded.hex(),
                      "txs": len(w.template.txs), "fees": w.template.fees,
                      "filler": list(node.miner.filler.shape if node.miner else
                                     node.conf.filler_shape or cfg.pow.filler_shape),
                      "params": {"rank": cfg.pow.rank, "tile_h": cfg.pow.tile_h, "tile_w": cfg.pow.tile_w}})

    @r.post(API + "/mining/submit")
    async def mining_submit(request):
        doc = await body_json(request)
        hb = hexarg(doc.get("header", ""), "header")
        result, res, reason = node.submit_work(str(doc.get("template_id", "")), hb)
        out = {"result": result, "reason": reason}
        if res is not None:
            out["hash"] = res.hash.hex()
        return _json(out, status=200 if result in ("accepted", "duplicate", "stale") else 422)

    # --- compute jobs (docs/jobs-client.md) and their blobs ----------------------------------------------
    job_routes(r, node)

    blob_routes(r, node)  # node/blobs_api.py

    from node.economy_api import economy_routes  # the economy's read-only endpoints (docs/api.md §Economy)
    economy_routes(r, node)
    from node.explorer_api import explorer_routes  # the explorer page at / and its lookups (docs/api.md §Explorer)
    explorer_routes(r, node)

    @r.get("/metrics")
    async def metrics(request):
        return web.Response(body=node.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})

    if p2p:
        @r.get("/p2p")
        async def p2p_ws(request):
            return await node.p2p.handle_inbound(request)

    app.add_routes(r)
    return app

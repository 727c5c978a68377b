"""The remote-worker endpoints of the HTTP API (getblocktemplate pattern, node.client.worker; docs/api.md):
`/mining/work` hands out a block template (and records the worker's reported rate), `/mining/submit` takes a
solved header for it. Registered by node.server.api.make_app."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from aiohttp import web

from chain.difficulty import block_work
from chain.keys import parse_address
from node.server.apiargs import API, body_json, hexarg
from node.server.apiargs import json_response as _json
from node.server.apierror import ApiError

if TYPE_CHECKING:
    from node.server.interfaces import MiningHost

MAX_WORK_RATE = 1e21  # MAC/s a remote worker may report (far above any device; finite JSON)


def mining_routes(r: web.RouteTableDef, node: MiningHost) -> None:
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
            if (
                isinstance(rate, bool)
                or not isinstance(rate, (int, float))
                or not math.isfinite(rate)
                or not 0 <= rate <= MAX_WORK_RATE
            ):
                raise ApiError(400, "bad-param", f"work_rate must be a number from 0 to {MAX_WORK_RATE:g}")
            rate = float(rate)
            if wid in node.workers or len(node.workers) < 1000:
                node.workers[wid] = {
                    "work_rate": rate,
                    "seen": time.time(),
                    "device": str(doc.get("device", ""))[:32],
                    "address": miner.hex(),
                }
        if node.sync.syncing:
            raise ApiError(503, "syncing", "node is syncing; no work until it reaches the best chain")
        w = node.templates.for_worker(wid if wid in node.workers else "", miner)
        h = w.template.header
        cfg = node.cfg
        return _json(
            {
                "template_id": w.id,
                "network": cfg.name,
                "height": h.height,
                "prev": h.prev_hash.hex(),
                "target": "%064x" % h.target,
                "work": block_work(h.target),
                "header": h.encoded.hex(),
                "txs": len(w.template.txs),
                "fees": w.template.fees,
                "filler": list(
                    node.miner.filler.shape if node.miner else node.conf.filler_shape or cfg.pow.filler_shape
                ),
                "params": {"rank": cfg.pow.rank, "tile_h": cfg.pow.tile_h, "tile_w": cfg.pow.tile_w},
            }
        )

    @r.post(API + "/mining/submit")
    async def mining_submit(request):
        doc = await body_json(request)
        hb = hexarg(doc.get("header", ""), "header")
        result, res, reason = node.submit_work(str(doc.get("template_id", "")), hb)
        out = {"result": result, "reason": reason}
        if res is not None:
            out["hash"] = res.hash.hex()
        return _json(out, status=200 if result in ("accepted", "duplicate", "stale") else 422)

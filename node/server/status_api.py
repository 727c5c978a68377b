"""The node's own state over the HTTP API (docs/api.md): `/status` (chain, peers, mempool, mining, sync,
storage), `/peers`, and the Prometheus text at `/metrics`. Registered by node.server.api.make_app."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from chain.difficulty import block_work
from chain.validation import expected_target
from node.server.apiargs import API
from node.server.apiargs import json_response as _json

if TYPE_CHECKING:
    from node.server.interfaces import StatusHost


def status_json(node: StatusHost) -> dict:
    cs = node.chain
    tip = cs.tip
    nxt = expected_target(cs.cfg, cs.next_parent_info())
    miner = node.miner
    now = time.time()
    return {
        "network": cs.cfg.name,
        "chain_id": cs.cfg.chain_id,
        "genesis": cs.genesis.hash.hex(),
        "height": cs.height,
        "tip": tip.hash.hex(),
        "tip_time": tip.timestamp,
        "chainwork": tip.chainwork,
        "difficulty": block_work(nxt),
        "peers": len(node.p2p.ready_peers),
        "node_id": node.node_key.pubkey.hex(),
        "mempool": {"size": len(node.mempool), "bytes": node.mempool.bytes},
        "work_rate": node.work_rate(),
        "work_rate_unit": "multiply-adds of mined jobs per second (60 s window)",
        "mining": {
            "enabled": bool(miner and miner.enabled),
            "state": ("storage-fault" if not node.storage.ok else miner.state) if miner else "off",
            "device": miner.device.spec if miner else None,
            "device_state": miner.device.state if miner else None,
            "device_faults": miner.device.total_faults if miner else 0,
            "address": node.mining_address.hex(),
            "blocks_found": miner.blocks_found if miner else 0,
            "local_work_rate": miner.rate.rate() if miner else 0.0,
            "filler_shape": list(miner.filler.shape) if miner else None,
            **dict(zip(("mined_macs", "paid_macs", "useful_fraction"), miner.useful_work() if miner else (0, 0, 0.0))),
            "workers": [
                {
                    "id": k,
                    "work_rate": v["work_rate"],
                    "device": v.get("device"),
                    "last_seen_s": round(now - v["seen"], 1),
                }
                for k, v in node.workers.items()
                if now - v["seen"] < 300
            ],
        },
        "sync": node.sync.progress(),
        "storage": node.storage.json(),
        "uptime_s": round(now - node.started_at, 1),
    }


def status_routes(r: web.RouteTableDef, node: StatusHost) -> None:
    @r.get(API + "/status")
    async def status(request):
        return _json(status_json(node))

    @r.get(API + "/peers")
    async def peers(request):
        return _json(
            {
                "peers": [p.info() for p in node.p2p.ready_peers],
                "known": sorted(node.book.addrs),
                "banned": len([1 for v in node.book.bans.values() if v > time.time()]),
            }
        )

    @r.get("/metrics")
    async def metrics(request):
        return web.Response(
            body=node.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

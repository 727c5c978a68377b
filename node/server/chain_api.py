"""The chain endpoints of the HTTP API (docs/api.md): the network's parameters, blocks by hash or height, the
block list and the chain tips. Registered by node.server.api.make_app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from chain.block import Block
from chain.difficulty import block_work
from node.server.apiargs import API, UINT, hexarg, query_int, tx_json
from node.server.apiargs import json_response as _json
from node.server.apierror import ApiError

if TYPE_CHECKING:
    from node.server.interfaces import NodeView


def block_json(node: NodeView, b: Block, with_txs: bool = True) -> dict:
    h = b.header
    e = node.chain.index.get(b.hash)
    d = {
        "hash": b.hash.hex(),
        "height": h.height,
        "prev": h.prev_hash.hex(),
        "timestamp": h.timestamp,
        "target": "%064x" % h.target,
        "work": block_work(h.target),
        "chainwork": e.chainwork if e else None,
        "miner": h.miner.hex(),
        "tx_root": h.tx_root.hex(),
        "state_root": h.state_root.hex(),
        "job": {"m": h.job.m, "k": h.job.k, "n": h.job.n, "h_a": h.job.h_a.hex(), "h_b": h.job.h_b.hex()},
        "nonce": h.nonce,
        "proof_bytes": len(h.proof),
        "size": len(b.encoded),
        "active": node.chain.is_active(b.hash),
        "confirmations": node.chain.height - h.height + 1 if node.chain.is_active(b.hash) else 0,
        "tx_count": len(b.txs),
    }
    if with_txs:
        d["txs"] = [tx_json(t) for t in b.txs]
    return d


def chain_routes(r: web.RouteTableDef, node: NodeView) -> None:
    @r.get(API + "/network")
    async def network(request):
        cfg = node.cfg
        return _json(
            {
                "name": cfg.name,
                "chain_id": cfg.chain_id,
                "genesis": node.chain.genesis.hash.hex(),
                "target_block_time": cfg.target_block_time,
                "config_toml": cfg.source,
            }
        )

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
        return _json(
            {
                "tips": [
                    {"hash": t.hash.hex(), "height": t.height, "branchlen": t.branchlen, "status": t.status}
                    for t in node.chain.chain_tips()[:100]
                ]
            }
        )

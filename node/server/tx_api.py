"""The transaction, account and mempool endpoints of the HTTP API (docs/api.md): look up and submit
transactions, an account's balance and nonces, the mempool in mining order. Registered by node.server.api.make_app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from chain.errors import EncodingError, ValidationError
from chain.keys import parse_address
from chain.tx import decode_tx
from node.server.apiargs import API, body_json, hexarg, query_int, tx_json
from node.server.apiargs import json_response as _json
from node.server.apierror import ApiError

if TYPE_CHECKING:
    from node.server.interfaces import TxHost


def tx_routes(r: web.RouteTableDef, node: TxHost) -> None:
    @r.get(API + "/tx/{txid}")
    async def get_tx(request):
        txid = hexarg(request.match_info["txid"], "txid", 32)
        t = node.mempool.get(txid)
        if t is not None:
            return _json({"status": "pending", "tx": tx_json(t)})
        bh = node.txindex.get(txid)
        if bh is not None:
            b = node.chain.get_block(bh)
            for t in b.txs:  # type: ignore[union-attr]
                if t.txid == txid:
                    return _json(
                        {
                            "status": "confirmed",
                            "block": bh.hex(),
                            "height": b.height,  # type: ignore[union-attr]
                            "confirmations": node.chain.height - b.height + 1,
                            "tx": tx_json(t),
                        }
                    )  # type: ignore[union-attr]
        raise ApiError(404, "tx-not-found", "transaction not in the mempool or the active chain")

    @r.post(API + "/tx")
    async def post_tx(request):
        doc = await body_json(request)
        raw = hexarg(doc.get("tx", ""), "tx")
        try:
            tx = decode_tx(raw, node.cfg.max_tx_bytes)
            added = node.add_tx(tx)
        except ValidationError as e:
            raise ApiError(422 if not isinstance(e, EncodingError) else 400, e.reason, e.detail or e.reason) from None
        return _json({"txid": tx.txid.hex(), "accepted": True, "new": added}, status=202 if added else 200)

    @r.get(API + "/accounts/{address}")
    async def account(request):
        try:
            a = parse_address(request.match_info["address"])
        except ValueError as e:
            raise ApiError(400, "bad-address", str(e)) from None
        acct = node.chain.get_account(a)
        pend = node.mempool.by_sender.get(a, {})
        return _json(
            {
                "address": a.hex(),
                "balance": acct.balance,
                "nonce": acct.nonce,
                "pending_nonce": node.mempool.pending_nonce(a),
                "pending_txs": len(pend),
                "height": node.chain.height,
            }
        )

    @r.get(API + "/mempool")
    async def mempool(request):
        limit = min(1000, query_int(request, "limit", 100))
        txs = node.mempool.ordered(limit)
        return _json(
            {
                "size": len(node.mempool),
                "bytes": node.mempool.bytes,
                "total_fees": node.mempool.total_fees(),
                "txs": [tx_json(t) for t in txs],
            }
        )

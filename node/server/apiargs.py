"""Request arguments and JSON shapes shared by the API's route modules (node.server.api, node.server.jobs_api, ...):
every bad argument is an ApiError 400 with a stable code."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from node.server.apierror import ApiError

if TYPE_CHECKING:
    from chain.tx import Transaction

API = "/api/v1"
UINT = re.compile(r"[0-9]{1,18}")


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.json_response(obj, status=status)


def query_int(request: web.Request, name: str, default: int) -> int:
    """A query parameter of ASCII digits (no sign, no '_', at most 18 digits)."""
    v = request.query.get(name)
    if v is None:
        return default
    if not UINT.fullmatch(v):
        raise ApiError(400, "bad-param", f"{name} must be a non-negative integer")
    return int(v)


async def body_json(request: web.Request) -> dict:
    try:
        doc = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "bad-json", "request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "bad-json", "request body must be a JSON object")
    return doc


def hexarg(v: Any, name: str, n: int | None = None) -> bytes:
    try:
        b = bytes.fromhex(v.removeprefix("0x"))
    except (ValueError, AttributeError, TypeError):
        raise ApiError(400, "bad-param", f"{name} must be hex") from None
    if n is not None and len(b) != n:
        raise ApiError(400, "bad-param", f"{name} must be {n} bytes")
    return b


def tx_json(tx: Transaction) -> dict:
    d = {
        "txid": tx.txid.hex(),
        "kind": tx.kind,
        "chain_id": tx.chain_id,
        "nonce": tx.nonce,
        "sender": tx.sender.hex(),
        "fee": tx.fee,
        "size": len(tx.encoded),
        "raw": tx.encoded.hex(),
    }
    if hasattr(tx.payload, "recipient"):
        d["recipient"] = tx.payload.recipient.hex()
        d["amount"] = tx.payload.amount
    return d

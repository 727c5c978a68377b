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
from typing import TYPE_CHECKING

from aiohttp import web

from node.server.apiargs import API
from node.server.apierror import ApiError
from node.server.blobs_api import blob_routes
from node.server.chain_api import chain_routes
from node.server.economy_api import economy_routes
from node.server.explorer_api import explorer_routes
from node.server.jobs_api import job_routes
from node.server.mining_api import mining_routes
from node.server.status_api import status_routes
from node.server.tx_api import tx_routes
from node.logfmt import event

if TYPE_CHECKING:
    from node.server.interfaces import ApiGuardHost, ApiHost
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

        event(logging.getLogger("pouw.api"), logging.ERROR, "API error", exc_info=True, path=request.path)
        return ApiError(500, "internal", type(e).__name__).response()


def _host_allowed(host: str | None, allowed: list[str]) -> bool:
    """Host header check (DNS rebinding): IP literals, localhost and configured names ("*": any)."""
    if not host or "*" in allowed:
        return True
    if host.startswith("["):  # [IPv6]:port
        name = host[1 : host.find("]")]
    elif host.count(":") == 1:  # name:port or IPv4:port
        name = host.partition(":")[0]
    else:  # bare name or IPv4
        name = host
    name = name.lower().rstrip(".")
    if name == "localhost" or name in (a.lower() for a in allowed):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def security_middleware(node: ApiGuardHost, max_body: int):
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
            raise ApiError(
                403, "host-not-allowed", "Host must be an IP address, localhost or a name set with --api-allow-host"
            )
        if request.method == "OPTIONS" and origin is not None and origin_ok:
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Vary": "Origin",
                    "Access-Control-Allow-Methods": "GET, POST, PUT",
                    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Blob-Hash",
                    "Access-Control-Max-Age": "600",
                },
            )
        if request.method in WRITE_METHODS:
            blob = request.path.startswith(API + "/blobs")
            limit = node.blobs.max_bytes if blob else max_body
            if request.content_length is not None and request.content_length > limit:
                resp = ApiError(
                    413, "blob-too-large" if blob else "body-too-large", f"{request.content_length} bytes > {limit}"
                ).response()
                resp.force_close()  # do not keep the connection for the rest of the body
                return resp
            token = node.api_token
            if token:
                got = request.headers.get("Authorization", "")
                if not (got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), token.encode())):
                    resp = ApiError(
                        401,
                        "unauthorized",
                        "this endpoint needs Authorization: Bearer <token> "
                        "(the node's --api-token or its .cookie file)",
                    ).response()
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


def make_p2p_app(node: ApiHost) -> web.Application:
    """The public peer listener when the API has its own: the websocket and local blob reads only."""
    app = web.Application(
        client_max_size=64 * 1024, middlewares=[errors_middleware, security_middleware(node, 64 * 1024)]
    )

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


def make_app(node: ApiHost, p2p: bool = True) -> web.Application:
    """The API app; with `p2p` it also serves the peer websocket (one shared listener). Each area's routes live
    in its own module and see the node through its own interface (node.server.interfaces)."""
    max_body = node.conf.api_max_body or (2 * node.cfg.max_header_bytes + 64 * 1024)
    app = web.Application(
        client_max_size=max_body, middlewares=[errors_middleware, security_middleware(node, max_body)]
    )
    r = web.RouteTableDef()
    status_routes(r, node)  # /status, /peers, /metrics: node/server/status_api.py
    chain_routes(r, node)  # /network, /blocks, /chaintips: node/server/chain_api.py
    tx_routes(r, node)  # transactions, accounts, mempool: node/server/tx_api.py
    mining_routes(r, node)  # remote workers: node/server/mining_api.py
    job_routes(r, node)  # compute jobs (docs/jobs-client.md): node/server/jobs_api.py
    blob_routes(r, node)  # job operands and results: node/server/blobs_api.py
    economy_routes(r, node)  # the economy's read-only endpoints (docs/api.md §Economy): node/server/economy_api.py
    explorer_routes(
        r, node
    )  # the explorer page at / and its lookups (docs/api.md §Explorer): node/server/explorer_api.py
    if p2p:

        @r.get("/p2p")
        async def p2p_ws(request):
            return await node.p2p.handle_inbound(request)

    app.add_routes(r)
    return app

"""The blob endpoints of the HTTP API (docs/api.md §Blobs): uploads (admission, quotas and checks in
node.server.blobgate) and downloads, from this node's store or fetched from its peers. Registered by node.server.api.make_app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from node.server.apiargs import API, hexarg
from node.server.apierror import ApiError

if TYPE_CHECKING:
    from node.server.interfaces import BlobsHost


def blob_routes(r: web.RouteTableDef, node: BlobsHost) -> None:
    async def put_blob(request):  # admission, quotas, streaming and checks: node/server/blobgate.py
        return await node.blobgate.upload(request)

    r.post(API + "/blobs")(put_blob)
    r.put(API + "/blobs")(put_blob)

    @r.get(API + "/blobs/{hash}")
    async def get_blob(request):
        h = hexarg(request.match_info["hash"], "hash", 32)
        if request.query.get("local") in ("1", "true"):
            data = node.blobs.get(h)
        else:
            data = await node.fetch_blob(h)
        if data is None:
            raise ApiError(404, "blob-not-found", "no such blob here or at the peers")
        return web.Response(body=data, content_type="application/octet-stream", headers={"X-Blob-Hash": h.hex()})

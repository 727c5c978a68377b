"""The HTTP API's error: status, a stable code, a message (docs/api.md §Errors). Its own module so that the
route modules and node.server.blobgate raise it without importing node.server.api, which registers them."""

from __future__ import annotations

from aiohttp import web


class ApiError(Exception):
    """An API error: HTTP status, stable code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = {}

    def response(self) -> web.Response:
        return web.json_response(
            {"error": {"code": self.code, "message": self.message}}, status=self.status, headers=self.headers or None
        )

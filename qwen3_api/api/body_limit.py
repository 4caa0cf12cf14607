"""413 for a request body over the server's limit, checked before any route reads it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3_api.api.errors import error_response
from qwen3_api.errors import APIError


class BodyLimitMiddleware:
    """413 for a request body over ``limit`` bytes, by Content-Length or by counting a chunked body.

    Pure ASGI (not BaseHTTPMiddleware) so streaming responses and disconnect detection pass through untouched.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _error(self) -> APIError:
        return APIError(413, f"The request body is larger than the {self.limit} bytes this server accepts.",
                        "invalid_request_error", code="payload_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await error_response(self._error())(scope, receive, send)
                    return
        seen = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer 413 now and tell the app the client is gone: whatever it sends later is dropped.
                    refused = True
                    await error_response(self._error())(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)

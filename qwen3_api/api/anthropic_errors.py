"""Anthropic's error shape on the Messages routes: ``{"type": "error", "error": {"type", "message"}}``.

Everything in the app raises ``APIError`` and renders OpenAI's shape (api/errors.py); rather than teach every
handler and middleware (body limit, text guard, the 500 guard) a second shape, ``AnthropicErrorMiddleware`` sits
outside them all and rewrites the JSON error bodies of ``/v1/messages`` routes, keeping their status and headers
(Retry-After, X-RateLimit-*). Streams carry their errors as an ``error`` event built by ``anthropic_body``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3_api.errors import APIError

PREFIX = "/v1/messages"
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
# Anthropic's error types by status, as its SDK's ErrorObject union has them (so 413 is an invalid request, not
# the docs' request_too_large, which the SDK cannot parse); 503 is how this server says "try again shortly".
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error",
               429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 504: "timeout_error",
               529: "overloaded_error"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_body(err: APIError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(err.status), "message": err.message}}


def _reshape(status: int, body: bytes) -> bytes | None:
    """The Anthropic body for an OpenAI-shaped error body; None when it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or data.get("type") == "error":
        return None
    message = error.get("message") or "error"
    if error.get("param") and error["param"] not in message:
        message = f"{error['param']}: {message}"  # Anthropic's shape has no param: it goes in the message
    return json.dumps({"type": "error", "error": {"type": error_type(status), "message": message}}).encode()


class AnthropicErrorMiddleware:
    """Rewrites error responses of the Messages routes into Anthropic's shape (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    start = message  # held until the whole (small) error body is here
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                new = _reshape(start["status"], body) or body
                headers = [(k, v) for k, v in start.get("headers") or [] if k != b"content-length"]
                headers.append((b"content-length", str(len(new)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": new})
                return
            await send(message)

        await self.app(scope, receive, reshaping_send)

"""Server-sent events: framing, keep-alive comments during long prefills, and disconnect detection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qwen3_api.errors import APIError

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def sse_event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One ``data: {json}\\n\\n`` event."""
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json()
    else:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return b"data: " + body.encode() + b"\n\n"


def sse_named(event: str, payload: dict[str, Any]) -> bytes:
    """One ``event: NAME`` + ``data: {json}`` event: the typed framing of the Responses and Messages streams."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()


def sse_error(err: APIError) -> bytes:
    """The mid-stream error form: one event whose JSON has an ``error`` key (the OpenAI SDK raises on it)."""
    return sse_event(err.body())


async def with_keepalive(events: AsyncIterator[bytes], interval_s: float, keepalive: bytes = KEEPALIVE
                         ) -> AsyncIterator[bytes]:
    """Yield ``events``; when none comes for ``interval_s`` (a long prefill) yield ``keepalive`` instead (a
    comment line; Anthropic's stream has its own ``ping`` event).

    The pending ``__anext__`` survives the timeout, so no event is lost. When the consumer goes away the
    pending step is cancelled and the source is closed, so its ``finally`` (abort, settle) always runs.
    """
    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not done:
                yield keepalive
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        # Shielded: this runs while the response's scope is being cancelled by a client disconnect.
        with anyio.CancelScope(shield=True):
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()


class SSEResponse(StreamingResponse):
    """A ``text/event-stream`` response that always watches for the client's disconnect.

    Starlette only watches ``receive`` for ASGI servers older than spec 2.4; a disconnect must cancel the
    generation (and free its KV blocks) whatever the server, so the watch is unconditional here.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: dict[str, str] | None = None,
                 on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(content, headers={**SSE_HEADERS, **(headers or {})})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    with contextlib.suppress(OSError):
                        await self.stream_response(send)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            # The safety net: a client gone before the body started never ran the generator's own cleanup.
            if self._on_close is not None:
                with anyio.CancelScope(shield=True):
                    await self._on_close()


def stream_error(exc: BaseException) -> APIError:
    """The APIError to send for a failure after the stream started (the status line is already 200)."""
    if isinstance(exc, APIError):
        return exc
    return APIError(500, f"The server failed while generating: {exc}", "server_error", code="internal_error")

"""`serve --access-log`: one line per HTTP request on the ``qwen3_api.access`` logger, written when it ends.

A pure ASGI middleware, so a streamed response is logged once, after its last chunk (with the tokens its
generation settled), not when its headers leave. The line never holds a secret: the Authorization header is
never read here; the key appears only as the label (``sk-…abcd``) the app notes once the key is known.

What the app learns mid-request reaches the line through :func:`note`. It writes into the record of the
request being handled, held in a context variable: the ``Generation`` deep inside a streaming body (a task
of its own, with a copy of the context that still points at the same record) needs no request object for it.
Outside a logged request (access log off, offline use) ``note`` does nothing.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("qwen3_api.access")

# The line's fields, in order; a field nobody noted is written as "-".
FIELDS = ("id", "key", "method", "path", "status", "prompt_tokens", "completion_tokens", "duration_ms",
          "outcome", "client")
_record: ContextVar[dict[str, Any] | None] = ContextVar("qwen3_api_access_record", default=None)


def note(**fields: Any) -> None:
    """Add facts about the request being handled to its access-log line (a no-op when none is being logged).

    Known fields: ``id`` (generation id), ``key`` (the key's masked label), ``prompt_tokens``,
    ``completion_tokens``, ``outcome`` (completed | cancelled | error, as the generation settled).
    """
    record = _record.get()
    if record is not None:
        record.update(fields)


def format_line(record: dict[str, Any]) -> str:
    """``field=value`` pairs (logfmt); values with spaces, quotes or '=' are JSON-quoted."""
    parts = []
    for name in FIELDS:
        value = record.get(name)
        text = "-" if value is None or value == "" else str(value)
        if any(c in text for c in ' "=\\') or not text.isprintable():
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{name}={text}")
    return " ".join(parts)


class AccessLogMiddleware:
    """Logs every HTTP request once, when the app is done with it (streams included), at INFO."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Asking for the access log means wanting its lines even when the server logs at WARNING.
        log.setLevel(logging.INFO)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        record: dict[str, Any] = {"method": scope.get("method"), "path": scope.get("path"),
                                  "client": client[0] if client else None}
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            await send(message)

        token = _record.set(record)
        try:
            await self.app(scope, receive, send_status)
        except Exception:
            record.setdefault("status", 500)  # Starlette's outermost handler answers 500 after us
            raise
        finally:
            _record.reset(token)
            # Done (or cancelled) without a response: the client went away first (nginx's 499).
            record.setdefault("status", 499)
            record["duration_ms"] = round((time.perf_counter() - started) * 1000)
            log.info("%s", format_line(record))

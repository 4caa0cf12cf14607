"""The FastAPI app factory: routers, error handlers, the body-size limit, and the engine's lifetime."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3_api import __version__
from qwen3_api.api.access_log import AccessLogMiddleware
from qwen3_api.api.disconnect import CancelOnDisconnectMiddleware
from qwen3_api.api.drain import Drain
from qwen3_api.api.errors import KeepAliveOn500Middleware, error_response, install_error_handlers
from qwen3_api.api.metrics import Metrics, MetricsMiddleware
from qwen3_api.api.openapi import publish_schema
from qwen3_api.api.text_guard import TextGuardMiddleware
from qwen3_api.errors import APIError
from qwen3_api.platform.catalog import Catalog, CatalogEntry

log = logging.getLogger(__name__)
# How long shutdown waits for requests that were ended to write their ledger rows.
SETTLE_WAIT_S = 15.0


@dataclass(slots=True)
class Settings:
    """Serving options that are not the engine's or the platform's."""

    served_model_name: str = "qwen/qwen3-30b-a3b"
    max_n: int = 8
    max_body_bytes: int = 8 * 1024 * 1024
    keepalive_s: float = 5.0
    # Path of the model directory: the chat layer reads the tokenizer and chat template from it.
    model_path: str | None = None
    shutdown_engine: bool = True
    # At shutdown, requests in flight get this long to finish before they are ended and settled (drain.py).
    shutdown_timeout: float = 30.0
    # The built-in demo model (random weights) under the served name: /v1/models and /health say so.
    demo: bool = False
    # One line per request on the qwen3_api.access logger (serve --access-log).
    access_log: bool = False


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


class _App(FastAPI):
    """FastAPI with :class:`KeepAliveOn500Middleware` outside Starlette's ServerErrorMiddleware (which re-raises)."""

    def build_middleware_stack(self) -> ASGIApp:
        return KeepAliveOn500Middleware(super().build_middleware_stack())


def create_app(engine: Any, catalog: Catalog, gateway: Any, settings: Settings | None = None) -> FastAPI:
    """Build the API around a running engine (``AsyncLLMEngine``), the catalog and the platform's Gateway.

    The served model is ``settings.served_model_name``; it must be in the catalog (its context length is
    replaced by the one in force, ``engine.max_model_len``). Entries with a ``base_url`` are forwarded upstream.
    """
    from qwen3_api.api.routes import chat_completions, completions, health, metrics, models
    from qwen3_api.api.state import AppState

    settings = settings or Settings()
    name = settings.served_model_name
    if catalog.get(name) is None:
        # A name the catalog does not know is served at no price rather than refused: a local experiment.
        log.warning("served model %r is not in the catalog (%s): serving it free of charge", name,
                    ", ".join(catalog.entries))
        catalog.entries[name] = CatalogEntry(id=name, name=name, capabilities=["text-generation"])

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        drain = app.state.api.drain
        if drain.active:
            await drain.cut_all()  # the server stopped waiting for them: end them now, so they settle
        # Leases go back (gateway.close) only once every request in flight has settled its hold.
        await drain.wait_settled(SETTLE_WAIT_S)
        close = getattr(gateway, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.exception("gateway close failed")
        if catalog.entries and any(e.is_upstream for e in catalog.entries.values()):
            from qwen3_api.platform.upstream import close_clients

            await close_clients()
        if settings.shutdown_engine and hasattr(engine, "shutdown"):
            await engine.shutdown()

    app = _App(title="qwen3-api", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API for Qwen3-30B-A3B (chat completions, completions, models).")
    stats = getattr(engine, "stats", None)
    app.state.api = AppState(engine=engine, catalog=catalog, gateway=gateway, settings=settings,
                             drain=Drain(settings.shutdown_timeout),
                             metrics=Metrics(stats if callable(stats) else None))
    install_error_handlers(app)
    for module in (chat_completions, completions, models, health, metrics):
        app.include_router(module.router)
    extra_routers = getattr(gateway, "routers", None)
    for router in (extra_routers() if callable(extra_routers) else []):
        app.include_router(router)
    publish_schema(app, max_n=settings.max_n)
    # Innermost: once the handler has the body, a client that leaves cancels it (every route, one mechanism).
    app.add_middleware(CancelOnDisconnectMiddleware)
    # The text check reads only bodies the size limit let through.
    app.add_middleware(TextGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.api.metrics)
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)  # outermost of ours: it sees the 413s and the metrics' time too
    return app

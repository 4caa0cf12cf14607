"""The FastAPI app factory: middleware, routers, services, error handlers, and the lifetime of what it serves."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp

from qwen3_api import __version__
from qwen3_api.api.access_log import AccessLogMiddleware
from qwen3_api.api.anthropic_errors import AnthropicErrorMiddleware
from qwen3_api.api.body_limit import BodyLimitMiddleware
from qwen3_api.api.console.mount import mount_console
from qwen3_api.api.disconnect import CancelOnDisconnectMiddleware
from qwen3_api.api.drain import Drain
from qwen3_api.api.errors import KeepAliveOn500Middleware, install_error_handlers
from qwen3_api.api.metrics import Metrics, MetricsMiddleware
from qwen3_api.api.openapi import publish_schema
from qwen3_api.api.routes import (
    admin,
    admin_activity,
    chat_completions,
    completions,
    health,
    key_activity,
    keys,
    messages,
    metrics,
    models,
    responses,
    tokenize,
)
from qwen3_api.api.serving_chat import ChatCompletionService
from qwen3_api.api.serving_completion import CompletionService
from qwen3_api.api.serving_messages import MessagesService
from qwen3_api.api.serving_responses import ResponsesService
from qwen3_api.api.serving_tokenize import TokenizeService
from qwen3_api.api.settings import Settings
from qwen3_api.api.state import AppState
from qwen3_api.api.text_guard import TextGuardMiddleware
from qwen3_api.engine.protocol import EngineClient
from qwen3_api.platform.catalog import Catalog, CatalogEntry
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.upstream import close_clients

__all__ = ["Settings", "create_app"]
log = logging.getLogger(__name__)
# How long shutdown waits for requests that were ended to write their ledger rows.
SETTLE_WAIT_S = 15.0
ROUTERS = (chat_completions, completions, models, health, metrics, admin, admin_activity, keys, key_activity,
           responses, messages, tokenize)


class _App(FastAPI):
    """FastAPI with :class:`KeepAliveOn500Middleware` outside Starlette's ServerErrorMiddleware (which re-raises)."""

    def build_middleware_stack(self) -> ASGIApp:
        # Outermost: the Messages routes' errors, whoever rendered them, leave in Anthropic's shape.
        return AnthropicErrorMiddleware(KeepAliveOn500Middleware(super().build_middleware_stack()))


def create_app(engine: EngineClient, catalog: Catalog, gateway: Gateway, settings: Settings | None = None
               ) -> FastAPI:
    """Build the API around a running engine, the catalog and the platform's Gateway.

    The served model is ``settings.served_model_name``; it must be in the catalog (its context length is
    replaced by the one in force, ``engine.max_model_len``). Entries with a ``base_url`` are forwarded upstream.
    """
    settings = settings or Settings()
    name = settings.served_model_name
    if catalog.get(name) is None:
        # A name the catalog does not know is served at no price rather than refused: a local experiment.
        log.warning("served model %r is not in the catalog (%s): serving it free of charge", name,
                    ", ".join(catalog.entries))
        catalog.entries[name] = CatalogEntry(id=name, name=name, capabilities=["text-generation"])
    state = AppState(engine=engine, catalog=catalog, gateway=gateway, settings=settings,
                     metrics=Metrics(engine.stats), drain=Drain(settings.shutdown_timeout))
    if settings.model_path is not None:
        state.chat_template()  # the tokenizer and template now, not on the first request

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await _shutdown(state)

    app = _App(title="qwen3-api", version=__version__, lifespan=lifespan,
               description="OpenAI-compatible API for Qwen3-30B-A3B (chat completions, completions, models).")
    app.state.api = state
    app.state.chat_service = ChatCompletionService(state)
    app.state.completion_service = CompletionService(state)
    app.state.responses_service = ResponsesService(state)
    app.state.messages_service = MessagesService(state)
    app.state.tokenize_service = TokenizeService(state)
    install_error_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    if settings.console:
        mount_console(app)  # /console and /console/api/session; the session cookie counts from now on
    publish_schema(app, max_n=settings.max_n)
    # Innermost: once the handler has the body, a client that leaves cancels it (every route, one mechanism).
    app.add_middleware(CancelOnDisconnectMiddleware)
    # The text check reads only bodies the size limit let through.
    app.add_middleware(TextGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)  # outermost of ours: it sees the 413s and the metrics' time too
    return app


async def _shutdown(state: AppState) -> None:
    """After the server stopped: end and settle what still runs, then close the platform and the engine."""
    if state.drain.active:
        await state.drain.cut_all()  # the server stopped waiting for them: end them now, so they settle
    # Leases go back (gateway.close) only once every request in flight has settled its hold.
    await state.drain.wait_settled(SETTLE_WAIT_S)
    try:
        await state.gateway.close()
    except Exception:  # noqa: BLE001 - shutting down anyway
        log.exception("gateway close failed")
    if any(e.is_upstream for e in state.catalog.entries.values()):
        await close_clients()
    if state.settings.shutdown_engine:
        await state.engine.shutdown()

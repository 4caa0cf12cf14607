"""Helpers for the platform tests: the databases and Redis they run on (``PG_URL``, ``REDIS_URL``, reachability,
a fresh PostgreSQL schema), and a small FastAPI app that drives the Gateway through its meter as the API's services
do, with a loopback server. The fixtures (``db_url``, ``db``, ``redis_url``) are in conftest.py.

The app's "model" is fake but the platform is real: prompt tokens = words in the messages, the completion is
``max_tokens`` words (``x_tokens`` overrides), ``x_fail="before"`` fails before any token,
``x_delay`` sleeps between streamed tokens. Upstream catalog entries go through ``upstream.forward_chat``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import cache
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from qwen3_api.api.routes import admin, keys
from qwen3_api.errors import APIError
from qwen3_api.platform import upstream
from qwen3_api.platform.catalog import Catalog, CatalogEntry
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.pricing import Usage

PG_URL = os.environ.get("QWEN3_API_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("QWEN3_API_TEST_REDIS", "redis://127.0.0.1:6379/0")


@cache
def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=2):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


@cache
def redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except Exception:  # noqa: BLE001
        return False


def unreachable(what: str) -> None:
    """Skip on a developer machine without the service; in CI (CI=true), where it runs, fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI must test against it)")
    pytest.skip(what)


@contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A URL of PG_URL's database on a fresh schema (``prefix`` and a random suffix), dropped afterwards."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    raw = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(raw, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# The app that drives the Gateway, and a loopback server.

MODEL = "qwen/qwen3-30b-a3b"
OTHER = "other/model"


def catalog(upstream_url: str | None = None, **extra: Any) -> Catalog:
    """The default catalog's prices for MODEL, a second local model, optionally an upstream entry."""
    base = Catalog.load()
    entries = {MODEL: base.entries[MODEL],
               OTHER: CatalogEntry(id=OTHER, prompt_price=Decimal("0.01"), completion_price=Decimal("0.02"))}
    if upstream_url:
        entries["up/model"] = CatalogEntry(id="up/model", prompt_price=Decimal("0.002"),
                                           completion_price=Decimal("0.006"), base_url=upstream_url,
                                           upstream_model="fake-upstream", **extra)
    return Catalog(entries)


def words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages)


def chunk(gen_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    event = {"id": gen_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    return f"data: {json.dumps(event)}\n\n".encode()


def usage_json(usage: Usage, cost: Decimal) -> dict[str, Any]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "cost": float(cost), "cost_exact": str(cost)}


def make_app(gateway: Gateway, cat: Catalog) -> FastAPI:
    app = FastAPI()
    # The API's own key routes (/admin/*, /v1/key, /v1/generation) read the gateway from the app's state.
    app.state.api = SimpleNamespace(gateway=gateway)
    app.state.settled: list[str] = []

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    app.include_router(admin.router)
    app.include_router(keys.router)

    @app.post("/v1/chat/completions")
    async def chat(request: Request, authorization: str | None = Header(default=None)) -> Any:
        body = await request.json()
        principal = await gateway.authenticate(authorization)
        entry = cat.get(body.get("model", ""))
        if entry is None:
            raise APIError(404, "no such model", "not_found_error", param="model", code="model_not_found")
        gateway.authorize_model(principal, entry.id)
        stream = bool(body.get("stream"))
        gen_id = "chatcmpl-" + uuid.uuid4().hex
        if entry.is_upstream:
            return await _upstream(gateway, entry, body, stream, gen_id, principal)
        prompt = words(body.get("messages") or [])
        max_tokens = int(body.get("max_tokens") or 16)
        n_tokens = min(int(body.get("x_tokens", max_tokens)), max_tokens)
        meter = gateway.meter(principal, entry, prompt_tokens=prompt, max_tokens=max_tokens, generation_id=gen_id,
                              streamed=stream)
        if not stream:
            async with meter:
                if body.get("x_fail") == "before":
                    raise APIError(500, "the engine failed before producing a token", "server_error",
                                   code="engine_error")
                await asyncio.sleep(float(body.get("x_hold", 0)))
                meter.first_token()
                meter.usage.completion_tokens = n_tokens
            return JSONResponse({
                "id": gen_id, "object": "chat.completion", "created": int(time.time()), "model": entry.id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(["w"] * n_tokens)},
                             "finish_reason": "length" if n_tokens == max_tokens else "stop", "logprobs": None}],
                "usage": usage_json(meter.usage, meter.cost)}, headers=meter.headers)
        await meter.admit()
        if body.get("x_fail") == "before":
            await meter.settle("error")
            raise APIError(500, "the engine failed before producing a token", "server_error", code="engine_error")
        delay = float(body.get("x_delay", 0))

        async def events() -> AsyncIterator[bytes]:
            try:
                async with meter:  # settles once: completed, or cancelled when the client leaves
                    yield chunk(gen_id, entry.id, {"role": "assistant", "content": ""})
                    for _ in range(n_tokens):
                        if delay:
                            await asyncio.sleep(delay)
                        meter.usage.completion_tokens += 1
                        meter.first_token()
                        yield chunk(gen_id, entry.id, {"content": "w "})
                produced = meter.usage.completion_tokens
                yield chunk(gen_id, entry.id, {}, "length" if produced == max_tokens else "stop")
                event = {"id": gen_id, "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": entry.id, "choices": [], "usage": usage_json(meter.usage, meter.cost)}
                yield f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
            finally:
                app.state.settled.append(gen_id)

        return StreamingResponse(events(), media_type="text/event-stream", headers=meter.headers)

    return app


async def _upstream(gateway: Gateway, entry: CatalogEntry, body: dict[str, Any], stream: bool, gen_id: str,
                    principal: Any) -> Any:
    meter = gateway.meter(principal, entry, prompt_tokens=upstream.estimate_prompt_tokens(body),
                          max_tokens=upstream.reservation_max_tokens(entry, body), generation_id=gen_id,
                          streamed=stream)
    timeout = float(body.pop("x_timeout", 30))
    if not stream:
        async with meter:
            up = await upstream.forward_chat(entry, body, stream=False, timeout_s=timeout)
            meter.usage, meter.ttft_s = up.usage_or_estimate(meter.usage.prompt_tokens), up.ttft_s
        return JSONResponse({**(up.json or {}), "id": gen_id})
    await meter.admit()
    try:
        up = await upstream.forward_chat(entry, body, stream=True, timeout_s=timeout)
    except APIError:
        await meter.settle("error")
        raise

    async def events() -> AsyncIterator[bytes]:
        try:
            async with meter:
                async for line in up.stream():
                    meter.usage, meter.ttft_s = up.usage_or_estimate(meter.usage.prompt_tokens), up.ttft_s
                    yield line
                await meter.settle(up.status)
        finally:
            await up.aclose()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Generation-Id": gen_id})


class ServerThread:
    """Run an ASGI app with uvicorn on a free loopback port in a thread; ``stop()`` shuts it down."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

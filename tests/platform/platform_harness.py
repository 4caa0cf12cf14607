"""A small FastAPI app that drives the Gateway exactly as the chat route does, and a loopback server for it.

The "model" is fake but the platform is real: prompt tokens = words in the messages, the completion is
``max_tokens`` words (``x_tokens`` overrides), ``x_fail="before"`` fails before any token,
``x_delay`` sleeps between streamed tokens. Upstream catalog entries go through ``upstream.forward_chat``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from qwen3_api.errors import APIError
from qwen3_api.platform import upstream
from qwen3_api.platform.catalog import Catalog, CatalogEntry
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.pricing import Usage

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
    app.state.gateway = gateway
    app.state.settled: list[str] = []

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    for router in gateway.routers():
        app.include_router(router)

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
        admission = await gateway.admit(principal, entry, prompt_tokens=prompt, max_tokens=max_tokens,
                                        generation_id=gen_id)
        started = time.monotonic()
        if body.get("x_fail") == "before":
            await gateway.settle(admission, Usage(prompt_tokens=prompt), status="error", streamed=stream,
                                 ttft_s=None, duration_s=time.monotonic() - started)
            raise APIError(500, "the engine failed before producing a token", "server_error", code="engine_error")
        if not stream:
            await asyncio.sleep(float(body.get("x_hold", 0)))
            usage = Usage(prompt_tokens=prompt, completion_tokens=n_tokens)
            cost = await gateway.settle(admission, usage, status="completed", streamed=False,
                                        ttft_s=0.001, duration_s=time.monotonic() - started)
            return JSONResponse({
                "id": gen_id, "object": "chat.completion", "created": int(time.time()), "model": entry.id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(["w"] * n_tokens)},
                             "finish_reason": "length" if n_tokens == max_tokens else "stop", "logprobs": None}],
                "usage": usage_json(usage, cost)}, headers=admission.headers)
        delay = float(body.get("x_delay", 0))

        async def events() -> AsyncIterator[bytes]:
            produced, status, ttft = 0, "cancelled", None
            try:
                yield chunk(gen_id, entry.id, {"role": "assistant", "content": ""})
                for _ in range(n_tokens):
                    if delay:
                        await asyncio.sleep(delay)
                    produced += 1
                    ttft = ttft if ttft is not None else time.monotonic() - started
                    yield chunk(gen_id, entry.id, {"content": "w "})
                usage = Usage(prompt_tokens=prompt, completion_tokens=produced)
                status = "completed"
                cost = await gateway.settle(admission, usage, status=status, streamed=True, ttft_s=ttft,
                                            duration_s=time.monotonic() - started)
                yield chunk(gen_id, entry.id, {}, "length" if produced == max_tokens else "stop")
                event = {"id": gen_id, "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": entry.id, "choices": [], "usage": usage_json(usage, cost)}
                yield f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
            finally:
                # Settle is idempotent and shielded: after a disconnect it still charges what was produced.
                await gateway.settle(admission, Usage(prompt_tokens=prompt, completion_tokens=produced),
                                     status=status, streamed=True, ttft_s=ttft, duration_s=time.monotonic() - started)
                app.state.settled.append(gen_id)

        return StreamingResponse(events(), media_type="text/event-stream", headers=admission.headers)

    return app


async def _upstream(gateway: Gateway, entry: CatalogEntry, body: dict[str, Any], stream: bool, gen_id: str,
                    principal: Any) -> Any:
    admission = await gateway.admit(principal, entry, prompt_tokens=upstream.estimate_prompt_tokens(body),
                                    max_tokens=upstream.reservation_max_tokens(entry, body), generation_id=gen_id)
    started = time.monotonic()
    try:
        up = await upstream.forward_chat(entry, body, stream=stream, timeout_s=float(body.pop("x_timeout", 30)))
    except APIError:
        await gateway.settle(admission, Usage(), status="error", streamed=stream, ttft_s=None,
                             duration_s=time.monotonic() - started)
        raise
    if not stream:
        await gateway.settle(admission, up.usage_or_estimate(admission.prompt_tokens), status="completed",
                             streamed=False, ttft_s=up.ttft_s, duration_s=time.monotonic() - started)
        return JSONResponse({**(up.json or {}), "id": gen_id})

    async def events() -> AsyncIterator[bytes]:
        try:
            async for line in up.stream():
                yield line
        finally:
            await gateway.settle(admission, up.usage_or_estimate(admission.prompt_tokens), status=up.status,
                                 streamed=True, ttft_s=up.ttft_s, duration_s=time.monotonic() - started)
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

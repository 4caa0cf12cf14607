"""Requests whose catalog entry is an upstream server: the platform forwards, the meter bills, we frame."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen3_api.api.engine_run import new_id
from qwen3_api.api.state import AppState
from qwen3_api.api.streaming import SSEResponse
from qwen3_api.platform import upstream
from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.principal import Principal


def _record(meter: Meter, up: upstream.UpstreamResponse) -> None:
    meter.usage = up.usage_or_estimate(meter.usage.prompt_tokens)
    meter.ttft_s = up.ttft_s


async def forward(state: AppState, principal: Principal, entry: CatalogEntry, req: BaseModel, path: str
                  ) -> Response:
    """Admit, forward unchanged through ``platform.upstream``, settle once (also when the client leaves)."""
    body = req.model_dump(exclude_unset=True, by_alias=True)
    stream = bool(body.get("stream"))
    meter = state.gateway.meter(principal, entry, prompt_tokens=upstream.estimate_prompt_tokens(body),
                                max_tokens=upstream.reservation_max_tokens(entry, body),
                                generation_id=new_id("chatcmpl" if "chat" in path else "cmpl"), streamed=stream,
                                endpoint=f"/v1/{path}")
    if not stream:
        async with meter:
            up = await upstream.forward_chat(entry, body, stream=False, path=path, response_id=meter.generation_id)
            _record(meter, up)
        return JSONResponse(up.json, headers=meter.headers)
    await meter.admit()
    try:
        up = await upstream.forward_chat(entry, body, stream=True, path=path, response_id=meter.generation_id)
    except anyio.get_cancelled_exc_class():
        await meter.settle("cancelled")  # the client left while the upstream worked (api/disconnect.py)
        raise
    except BaseException:
        await meter.settle("error")
        raise

    async def lines() -> AsyncIterator[bytes]:
        try:
            async with meter:
                async for chunk in up.stream():
                    _record(meter, up)
                    if up.status != "cancelled":
                        # The upstream's answer is complete ([DONE] or its error event): a client that hangs up
                        # now (the SDK does right after [DONE]) must not make it a cancelled generation.
                        await meter.settle(up.status)
                    yield chunk
                _record(meter, up)
                await meter.settle(up.status)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await up.aclose()

    async def close() -> None:
        await meter.close()
        with contextlib.suppress(Exception):
            await up.aclose()

    return SSEResponse(lines(), headers=meter.headers, on_close=close)

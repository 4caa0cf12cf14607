"""Dispatch of a request whose catalog entry is an upstream server: the platform forwards, we frame and bill."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen3_api.api.generation import new_id
from qwen3_api.api.state import AppState
from qwen3_api.api.streaming import SSEResponse
from qwen3_api.platform import upstream
from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.pricing import Usage


async def forward(state: AppState, principal: Any, entry: CatalogEntry, req: BaseModel, path: str) -> Response:
    """Admit, forward unchanged through ``platform.upstream``, settle once (also when the client leaves)."""
    body = req.model_dump(exclude_unset=True, by_alias=True)
    stream = bool(body.get("stream"))
    gateway = state.gateway
    started = time.monotonic()
    gen_id = new_id("chatcmpl" if "chat" in path else "cmpl")
    admission = await gateway.admit(principal, entry, prompt_tokens=upstream.estimate_prompt_tokens(body),
                                    max_tokens=upstream.reservation_max_tokens(entry, body), generation_id=gen_id)
    up: Any = None
    settled = False

    async def settle(status: str | None = None) -> None:
        nonlocal settled
        if settled:
            return
        settled = True
        with anyio.CancelScope(shield=True):
            usage = up.usage_or_estimate(admission.prompt_tokens) if up is not None else Usage()
            with contextlib.suppress(Exception):
                await gateway.settle(admission, usage, status=status or (up.status if up else "error"),
                                     streamed=stream, ttft_s=up.ttft_s if up else None,
                                     duration_s=time.monotonic() - started)
            if up is not None:
                with contextlib.suppress(Exception):
                    await up.aclose()

    headers = {**(getattr(admission, "headers", None) or {}), "X-Generation-Id": gen_id}
    try:
        up = await upstream.forward_chat(entry, body, stream=stream, path=path.lstrip("/"), response_id=gen_id)
    except anyio.get_cancelled_exc_class():
        await settle("cancelled")  # the client left while the upstream worked (api/disconnect.py)
        raise
    except BaseException:
        await settle("error")
        raise
    if not stream:
        await settle()
        return JSONResponse(up.json, headers=headers)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for chunk in up.stream():
                yield chunk
        finally:
            await settle()

    return SSEResponse(lines(), headers=headers, on_close=settle)

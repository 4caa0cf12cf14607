"""FastAPI dependencies shared by the routers: the app state and the caller's identity."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from qwen3_api.api import access_log
from qwen3_api.api.state import AppState, get_state
from qwen3_api.errors import invalid


async def authenticate(request: Request, state: AppState = Depends(get_state)) -> Any:
    """The caller's Principal from ``Authorization: Bearer ...`` (the Gateway raises the 401)."""
    principal = await state.gateway.authenticate(request.headers.get("authorization"))
    access_log.note(key=getattr(principal, "label", None))
    return principal


async def route_model(state: AppState, principal: Any, req: Any, upstream_path: str) -> Any:
    """The catalog entry a completion request runs on, once the caller may use it; for an upstream entry, the
    forwarded response instead (the upstream applies its own limits, so ``n`` is checked only for local ones).
    """
    entry = state.entry(req.model)
    state.gateway.authorize_model(principal, entry.id)
    if entry.is_upstream:
        from qwen3_api.api.upstream import forward

        return await forward(state, principal, entry, req, upstream_path)
    if req.n > state.settings.max_n:
        raise invalid(f"n must be at most {state.settings.max_n} on this server", "n")
    return entry

"""FastAPI dependencies shared by the routers: the app state and the caller's identity."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from qwen3_api.api.state import AppState, get_state


async def authenticate(request: Request, state: AppState = Depends(get_state)) -> Any:
    """The caller's Principal from ``Authorization: Bearer ...`` (the Gateway raises the 401)."""
    return await state.gateway.authenticate(request.headers.get("authorization"))

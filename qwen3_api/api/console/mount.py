"""Put the console on an app: its session store, its session API and its pages (`serve` does, unless
--no-console)."""

from __future__ import annotations

from fastapi import FastAPI

from qwen3_api.api.console import session_routes
from qwen3_api.api.console.sessions import SessionStore
from qwen3_api.api.console.spa import spa_router


def mount_console(app: FastAPI, store: SessionStore | None = None) -> SessionStore:
    """Serve /console and /console/api/session on ``app``; the cookie is honoured from then on."""
    app.state.console_sessions = store = store or SessionStore()
    app.include_router(session_routes.router)  # before the pages' catch-all
    app.include_router(spa_router())
    return store

"""/console/api/session: sign in with the admin key or an ``sk-`` key, see who is signed in, sign out.

The key travels once, in the sign-in body; the answer sets the session cookie (sessions.py) and gives the CSRF
token the page keeps in memory for its changes. Every refused sign-in gets the same 401, at the same delay after
it arrived, whether the key is unknown, revoked, expired, malformed or the admin key is not configured.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from qwen3_api.api.console.sessions import (
    ADMIN_PRINCIPAL,
    COOKIE,
    Role,
    Session,
    SessionStore,
    check_csrf,
    same_origin,
    session_principal,
    store_of,
)
from qwen3_api.api.deps import GatewayDep
from qwen3_api.errors import APIError
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.keys import KEY_PREFIX, hash_key
from qwen3_api.platform.principal import Principal

router = APIRouter(prefix="/console/api", tags=["console"])


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=4096, description="the admin key, or an sk- key for its own view")


def _store(request: Request) -> SessionStore:
    store = store_of(request)
    assert store is not None  # mount_console installs it with these routes
    return store


def _refused() -> APIError:
    return APIError(401, "Invalid key.", "authentication_error", code="invalid_api_key")


def _no_session() -> APIError:
    return APIError(401, "Not signed in to the console.", "authentication_error", code="no_session")


async def _identify(gateway: Gateway, key: str) -> tuple[Role, str | None] | None:
    """("admin", None), ("key", its hash), or None for anything that may not sign in."""
    admin_key = getattr(gateway, "admin_key", None)
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return "admin", None
    if not key.startswith(KEY_PREFIX):
        return None
    try:
        principal = await gateway.authenticate_hash(hash_key(key))
    except APIError as exc:
        if exc.status == 401:
            return None
        raise  # the key store is down: a 503, not a wrong key
    return "key", principal.key_hash


def _view(session: Session, principal: Principal, store: SessionStore) -> dict[str, Any]:
    return {"data": {"role": session.role, "name": principal.name, "label": principal.label,
                     "key_id": principal.key_id, "csrf_token": session.csrf,
                     "expires_in_s": int(min(store.ttl_s - (store.clock() - session.created), store.idle_s))}}


async def session_principal_of(session: Session, gateway: Gateway) -> Principal:
    if session.role == "admin" or session.key_hash is None:
        return ADMIN_PRINCIPAL
    return await gateway.authenticate_hash(session.key_hash)


@router.post("/session", status_code=201)
async def sign_in(body: SignIn, request: Request, response: Response, gateway: GatewayDep) -> dict[str, Any]:
    """Open a console session: an HttpOnly, SameSite=Strict cookie holding a random session id (never the key).
    The answer's ``csrf_token`` goes in ``X-CSRF-Token`` on every change. A refused key: 401, always alike."""
    started = time.monotonic()
    store = _store(request)
    identity = await _identify(gateway, body.key) if same_origin(request) else None
    if identity is None:
        await asyncio.sleep(max(0.0, started + store.fail_delay_s - time.monotonic()))
        raise _refused()
    store.end(request.cookies.get(COOKIE))  # a new sign-in never keeps an old session id
    session_id, session = store.create(*identity)
    response.set_cookie(COOKIE, session_id, max_age=int(store.ttl_s), path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    principal = await session_principal_of(session, gateway)
    return _view(session, principal, store)


@router.get("/session")
async def who(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """The signed-in role (admin or key), its name and label, and the session's CSRF token; 401 without one."""
    store = _store(request)
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        raise _no_session()
    principal = await session_principal(request, gateway)  # a key revoked since: 401, and the session ends
    assert principal is not None
    return _view(session, principal, store)


@router.delete("/session")
async def sign_out(request: Request, response: Response) -> dict[str, Any]:
    """End the session (CSRF token required) and clear its cookie."""
    store = _store(request)
    session_id = request.cookies.get(COOKIE)
    session = store.get(session_id)
    if session is None:
        raise _no_session()
    check_csrf(request, session)
    store.end(session_id)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return {"data": {"signed_out": True}}

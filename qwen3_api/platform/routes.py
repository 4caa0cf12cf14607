"""The platform's HTTP routes: the admin key API and the caller's own key and generations.

- ``/admin/keys`` — create / list / show / update / top-up / revoke keys; bearer = ``$QWEN3_API_ADMIN_KEY``
  (disabled, 403, when unset).
- ``GET /v1/key`` — the calling key's limits, credit left and usage (OpenRouter's ``/api/v1/key``).
- ``GET /v1/generation?id=`` — one ledger row, only to the key that made it.

The app includes them through ``Gateway.routers()``; each route reaches the gateway via ``app.state``
(``app.state.api.gateway`` as the API sets it, or ``app.state.gateway``).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from qwen3_api.errors import APIError
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.keys import KeyRecord
from qwen3_api.platform.ledger import usage_report
from qwen3_api.platform.principal import Principal


def get_gateway(request: Request) -> Gateway:
    """FastAPI dependency: the app's Gateway."""
    state = request.app.state
    api = getattr(state, "api", None)
    gateway = getattr(api, "gateway", None) if api is not None else None
    return gateway if gateway is not None else state.gateway


async def current_principal(authorization: str | None = Header(default=None),
                            gateway: Gateway = Depends(get_gateway)) -> Principal:
    """FastAPI dependency: the authenticated caller (401 otherwise)."""
    return await gateway.authenticate(authorization)


def require_admin(authorization: str | None = Header(default=None), gateway: Gateway = Depends(get_gateway)) -> None:
    """FastAPI dependency: the admin key or 401/403."""
    gateway.check_admin(authorization)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    credit: Decimal | None = Field(default=None, ge=0, description="credit limit in the catalog currency")
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    models: list[str] | None = None
    expires_at: datetime | None = None


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    credit: Decimal | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    models: list[str] | None = None
    expires_at: datetime | None = None


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(gt=0)


admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
key_router = APIRouter(prefix="/v1", tags=["keys"])


def _found(record: KeyRecord | None, key_id: int) -> KeyRecord:
    if record is None:
        raise APIError(404, f"No API key with id {key_id}.", "not_found_error", code="key_not_found")
    return record


@admin_router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Create a key. The secret is in this response only."""
    key, record = await asyncio.to_thread(
        gateway.keys.create, body.name, credit=body.credit, rpm=body.rpm, tpm=body.tpm, models=body.models,
        expires_at=body.expires_at)
    return {"key": key, "data": record.to_dict()}


@admin_router.get("/keys")
async def list_keys(gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    records = await asyncio.to_thread(gateway.keys.list)
    return {"data": [r.to_dict() for r in records]}


@admin_router.get("/keys/{key_id}")
async def show_key(key_id: int, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    return {"data": _found(await asyncio.to_thread(gateway.keys.get, key_id), key_id).to_dict()}


@admin_router.patch("/keys/{key_id}")
async def update_key(key_id: int, body: KeyUpdate, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Change limits; fields sent as null clear that limit, fields left out stay."""
    fields = body.model_dump(exclude_unset=True)
    record = _found(await asyncio.to_thread(gateway.keys.update, key_id, **fields), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@admin_router.post("/keys/{key_id}/top-up")
async def top_up_key(key_id: int, body: TopUp, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    record = _found(await asyncio.to_thread(gateway.keys.top_up, key_id, body.amount), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@admin_router.delete("/keys/{key_id}")
async def revoke_key(key_id: int, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Revoke a key; it fails authentication from the next request on (this replica) or within the cache TTL."""
    record = _found(await asyncio.to_thread(gateway.keys.revoke, key_id), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@admin_router.get("/usage")
async def usage(by: str = Query("day", pattern="^(day|model|key)$"), since: datetime | None = None,
                key_id: int | None = None, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Tokens and cost grouped by day, model or key."""
    key_hash = None
    if key_id is not None:
        key_hash = _found(await asyncio.to_thread(gateway.keys.get, key_id), key_id).key_hash
    rows = await gateway.db.run(lambda conn: usage_report(conn, key_hash=key_hash, since=since, by=by))
    for row in rows:
        row["cost"] = format(row["cost"], "f")
    return {"data": rows}


@key_router.get("/key")
async def my_key(principal: Principal = Depends(current_principal),
                 gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """The calling key: limits, credit left, usage."""
    return await gateway.key_info(principal)


@key_router.get("/generation")
async def my_generation(id: str = Query(min_length=1, max_length=100), principal: Principal = Depends(current_principal),
                        gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """One generation's ledger row (tokens, cost, status, timing), to the key that made it."""
    record = await gateway.get_generation(principal, id)
    return {"data": record.to_dict()}

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
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from qwen3_api.errors import APIError
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.key_fields import (
    MAX_NAME,
    MODEL_PATTERN,
    NAME_PATTERN,
    KeyFieldError,
    check_expiry,
    check_models,
    check_name,
)
from qwen3_api.platform.keys import DuplicateKeyNameError, KeyRecord
from qwen3_api.platform.ledger import usage_report
from qwen3_api.platform.principal import Principal
from qwen3_api.platform.tables import MAX_INT, MAX_MONEY

T = TypeVar("T")


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


# The fields as their columns hold them (key_fields): the published schema says so, a bad value is a 400 naming it.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, json_schema_extra={"pattern": NAME_PATTERN}),
                 AfterValidator(check_name)]
# pydantic would publish "any string" and a float maximum rounded above the column's range; these say less than
# the server takes (numbers up to MAX_MONEY; decimal strings below 1e8, at most 10 decimals), never more.
_NUMBER = {"type": "number", "maximum": float(MAX_MONEY.quantize(Decimal("1e-6"), ROUND_DOWN))}
Amount = Annotated[Decimal, Field(ge=0, le=MAX_MONEY), WithJsonSchema({
    "description": "in the catalog currency", "anyOf": [
        {**_NUMBER, "minimum": 0}, {"type": "string", "pattern": r"^[0-9]{1,8}(\.[0-9]{1,10})?$"}]})]
PositiveAmount = Annotated[Decimal, Field(gt=0, le=MAX_MONEY), WithJsonSchema({
    "description": "in the catalog currency", "anyOf": [
        {**_NUMBER, "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^(?=[0-9.]*[1-9])[0-9]{1,8}(\.[0-9]{1,10})?$"}]})]
Limit = Annotated[int, Field(gt=0, le=MAX_INT)]
ModelIds = list[Annotated[str, Field(min_length=1, json_schema_extra={"pattern": MODEL_PATTERN})]]
Expiry = Annotated[datetime, AfterValidator(check_expiry)]
KeyId = Annotated[int, Path(ge=1, le=MAX_INT)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    credit: Amount | None = Field(default=None, description="credit limit in the catalog currency")
    rpm: Limit | None = None
    tpm: Limit | None = None
    models: Annotated[ModelIds, AfterValidator(check_models)] | None = None
    expires_at: Expiry | None = None
    allow_duplicate_name: bool = Field(default=False, description="create it even if a live key has this name")


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(default=None)  # optional, but null is refused: a key always has a name
    credit: Amount | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    models: Annotated[ModelIds, AfterValidator(check_models)] | None = None
    expires_at: Expiry | None = None
    allow_duplicate_name: bool = Field(default=False, description="rename it even if a live key has the name")


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: PositiveAmount


admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
key_router = APIRouter(prefix="/v1", tags=["keys"])


async def _store(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a KeyStore call in a worker thread; a field it refuses (KeyFieldError) is a 400 naming the field."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except KeyFieldError as exc:
        raise APIError(400, f"Invalid value for '{exc.param}': {exc}", param=exc.param,
                       code="invalid_value") from None


def _found(record: KeyRecord | None, key_id: int) -> KeyRecord:
    if record is None:
        raise APIError(404, f"No API key with id {key_id}.", "not_found_error", code="key_not_found")
    return record


@admin_router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Create a key. The secret is in this response only. 409 ``duplicate_key_name`` when a live key has the name
    (unless ``allow_duplicate_name``)."""
    try:
        key, record = await _store(
            gateway.keys.create, body.name, credit=body.credit, rpm=body.rpm, tpm=body.tpm, models=body.models,
            expires_at=body.expires_at, allow_duplicate_name=body.allow_duplicate_name)
    except DuplicateKeyNameError as exc:
        raise APIError(409, f"Name taken: {exc}; send \"allow_duplicate_name\": true to create another.",
                       "invalid_request_error", param="name", code="duplicate_key_name") from None
    return {"key": key, "data": record.to_dict()}


@admin_router.get("/keys")
async def list_keys(gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    records = await asyncio.to_thread(gateway.keys.list)
    return {"data": [r.to_dict() for r in records]}


@admin_router.get("/keys/{key_id}")
async def show_key(key_id: KeyId, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    return {"data": _found(await asyncio.to_thread(gateway.keys.get, key_id), key_id).to_dict()}


@admin_router.patch("/keys/{key_id}")
async def update_key(key_id: KeyId, body: KeyUpdate, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Change limits; fields sent as null clear that limit, fields left out stay."""
    fields = body.model_dump(exclude_unset=True)
    allow = fields.pop("allow_duplicate_name", False)
    try:
        record = _found(await _store(gateway.keys.update, key_id, allow_duplicate_name=allow, **fields), key_id)
    except DuplicateKeyNameError as exc:
        raise APIError(409, f"Name taken: {exc}; send \"allow_duplicate_name\": true to rename anyway.",
                       "invalid_request_error", param="name", code="duplicate_key_name") from None
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@admin_router.post("/keys/{key_id}/top-up")
async def top_up_key(key_id: KeyId, body: TopUp, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Add to a key's credit; 400 when the credit would pass the largest amount a key can hold."""
    record = _found(await _store(gateway.keys.top_up, key_id, body.amount), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@admin_router.delete("/keys/{key_id}")
async def revoke_key(key_id: KeyId, gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """Revoke a key; it fails authentication from the next request on (this replica) or within the cache TTL."""
    record = _found(await asyncio.to_thread(gateway.keys.revoke, key_id), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@admin_router.get("/usage")
async def usage(by: str = Query("day", pattern="^(day|model|key)$"), since: datetime | None = None,
                key_id: int | None = Query(None, ge=1, le=MAX_INT),
                gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
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

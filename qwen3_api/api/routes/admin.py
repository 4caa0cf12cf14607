"""/admin/*: the admin key API (create / list / show / update / top-up / revoke keys, usage reports).

Bearer = ``$QWEN3_API_ADMIN_KEY`` (disabled, 403, when unset). Everything a route does is the Gateway's KeyStore
or ledger; a field the store refuses is a 400 naming it, a taken name a 409.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query

from qwen3_api.api.admin_schemas import KeyCreate, KeyId, KeyUpdate, TopUp
from qwen3_api.api.deps import GatewayDep, require_admin
from qwen3_api.errors import APIError
from qwen3_api.platform.key_fields import KeyFieldError
from qwen3_api.platform.keys import DuplicateKeyNameError, KeyRecord
from qwen3_api.platform.ledger import usage_report
from qwen3_api.platform.tables import MAX_INT

T = TypeVar("T")
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


async def _store(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a KeyStore call in a worker thread; a field it refuses (KeyFieldError) is a 400 naming the field."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except KeyFieldError as exc:
        raise APIError(400, f"Invalid value for '{exc.param}': {exc}", param=exc.param,
                       code="invalid_value") from None
    except DuplicateKeyNameError as exc:
        raise APIError(409, f"Name taken: {exc}; send \"allow_duplicate_name\": true to use it anyway.",
                       "invalid_request_error", param="name", code="duplicate_key_name") from None


def _found(record: KeyRecord | None, key_id: int) -> KeyRecord:
    if record is None:
        raise APIError(404, f"No API key with id {key_id}.", "not_found_error", code="key_not_found")
    return record


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, gateway: GatewayDep) -> dict[str, Any]:
    """Create a key. The secret is in this response only. 409 ``duplicate_key_name`` when a live key has the name
    (unless ``allow_duplicate_name``)."""
    key, record = await _store(gateway.keys.create, body.name, credit=body.credit, rpm=body.rpm, tpm=body.tpm,
                               models=body.models, expires_at=body.expires_at,
                               allow_duplicate_name=body.allow_duplicate_name)
    return {"key": key, "data": record.to_dict()}


@router.get("/keys")
async def list_keys(gateway: GatewayDep) -> dict[str, Any]:
    records = await asyncio.to_thread(gateway.keys.list)
    return {"data": [r.to_dict() for r in records]}


@router.get("/keys/{key_id}")
async def show_key(key_id: KeyId, gateway: GatewayDep) -> dict[str, Any]:
    return {"data": _found(await asyncio.to_thread(gateway.keys.get, key_id), key_id).to_dict()}


@router.patch("/keys/{key_id}")
async def update_key(key_id: KeyId, body: KeyUpdate, gateway: GatewayDep) -> dict[str, Any]:
    """Change limits; fields sent as null clear that limit, fields left out stay. A live key's name: 409."""
    fields = body.model_dump(exclude_unset=True)
    allow = fields.pop("allow_duplicate_name", False)
    record = _found(await _store(gateway.keys.update, key_id, allow_duplicate_name=allow, **fields), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@router.post("/keys/{key_id}/top-up")
async def top_up_key(key_id: KeyId, body: TopUp, gateway: GatewayDep) -> dict[str, Any]:
    """Add to a key's credit; 400 when the credit would pass the largest amount a key can hold."""
    record = _found(await _store(gateway.keys.top_up, key_id, body.amount), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: KeyId, gateway: GatewayDep) -> dict[str, Any]:
    """Revoke a key; it fails authentication from the next request on (this replica) or within the cache TTL."""
    record = _found(await asyncio.to_thread(gateway.keys.revoke, key_id), key_id)
    gateway.invalidate(record.key_hash)
    return {"data": record.to_dict()}


@router.get("/usage")
async def usage(gateway: GatewayDep, by: Annotated[str, Query(pattern="^(day|model|key)$")] = "day",
                since: datetime | None = None,
                key_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None) -> dict[str, Any]:
    """Tokens and cost grouped by day, model or key."""
    key_hash = None
    if key_id is not None:
        key_hash = _found(await asyncio.to_thread(gateway.keys.get, key_id), key_id).key_hash
    rows = await gateway.db.run(lambda conn: usage_report(conn, key_hash=key_hash, since=since, by=by))
    for row in rows:
        row["cost"] = format(row["cost"], "f")
    return {"data": rows}

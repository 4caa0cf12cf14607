"""/admin/* reads for dashboards: usage by day and model, top keys, the generations ledger (page, CSV, one row),
and the engine's live status. Admin key (or an admin console session) only, like every /admin route.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from qwen3_api.api.deps import GatewayDep, StateDep, require_admin
from qwen3_api.api.engine_info import TokenRate, engine_precision
from qwen3_api.api.ledger_views import (
    Days,
    GenerationQuery,
    Offset,
    Page,
    csv_response,
    generation_query,
    page_of_generations,
    usage_by_day,
)
from qwen3_api.errors import APIError
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.ledger_queries import GenerationFilter, days_back, get_generation_row, usage_by_key
from qwen3_api.platform.tables import MAX_INT

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
KeyFilter = Annotated[int | None, Query(ge=1, le=MAX_INT, description="only this key's generations")]
GenerationFilters = Annotated[GenerationQuery, Depends(generation_query)]


async def _key_hash(gateway: Gateway, key_id: int | None) -> str | None:
    if key_id is None:
        return None
    record = await asyncio.to_thread(gateway.keys.get, key_id)
    if record is None:
        raise APIError(404, f"No API key with id {key_id}.", "not_found_error", param="key_id",
                       code="key_not_found")
    return record.key_hash


@router.get("/usage/daily")
async def daily(gateway: GatewayDep, days: Days = 30, key_id: KeyFilter = None) -> dict[str, Any]:
    """Requests (with errors and cancellations), tokens and cost per UTC day and model over the last ``days``
    days; ``days`` in the answer lists every day of the window, so a day without traffic is a zero."""
    return await usage_by_day(gateway, days, await _key_hash(gateway, key_id))


@router.get("/usage/keys")
async def top_keys(gateway: GatewayDep, days: Days = 30,
                   limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
    """The keys that spent most over the last ``days`` days (then by tokens)."""
    await gateway.writer.flush()
    where = GenerationFilter(since=days_back(days)[0])
    return {"data": await gateway.db.run(lambda conn: usage_by_key(conn, where, limit=limit))}


@router.get("/generations")
async def generations(gateway: GatewayDep, filters: GenerationFilters, key_id: KeyFilter = None,
                      limit: Page = 50, offset: Offset = 0) -> dict[str, Any]:
    """The ledger, newest first, filtered by key, model, status, time (``since`` <= t < ``until``) and id
    prefix; ``total`` counts every matching row."""
    where = filters.filter(await _key_hash(gateway, key_id))
    return await page_of_generations(gateway, where, limit, offset)


@router.get("/generations.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "every matching row, newest first"}})
async def generations_csv(gateway: GatewayDep, filters: GenerationFilters,
                          key_id: KeyFilter = None) -> StreamingResponse:
    """The same rows as ``GET /admin/generations`` (all of them, no pages) as CSV."""
    where = filters.filter(await _key_hash(gateway, key_id))
    await gateway.writer.flush()
    return csv_response(gateway, where, "generations.csv")


@router.get("/generations/{generation_id}")
async def generation(gateway: GatewayDep,
                     generation_id: Annotated[str, Path(min_length=1, max_length=100)]) -> dict[str, Any]:
    """One ledger row with its key's id, label and name."""
    pending = gateway.writer.pending(generation_id)
    if pending is not None:
        await gateway.writer.flush()
    row = await gateway.db.run(lambda conn: get_generation_row(conn, generation_id))
    if row is None:
        raise APIError(404, f"No generation '{generation_id}'.", "not_found_error", param="generation_id",
                       code="generation_not_found")
    return {"data": row}


def _token_rate(request: Request) -> TokenRate:
    rate = getattr(request.app.state, "token_rate", None)
    if rate is None:
        rate = request.app.state.token_rate = TokenRate()
    return rate


@router.get("/engine")
async def engine_status(state: StateDep, request: Request) -> dict[str, Any]:
    """The local engine now: running / waiting sequences, KV-cache use, prefix-cache hit rate, tokens/s (over
    the last 10 s or more, between calls), preemptions."""
    try:
        s = state.engine.stats()
        alive = bool(state.engine.is_running)
    except Exception as exc:  # noqa: BLE001 - an engine that cannot report is reported as down, not a 500
        return {"data": {"status": "error", "detail": str(exc), "model": state.settings.served_model_name}}
    total = state.metrics.registry.get_sample_value("qwen3_api_completion_tokens_total") or 0.0
    tps = _token_rate(request).rate(total, time.monotonic())
    return {"data": {
        "status": "ok" if alive else "error", "model": state.settings.served_model_name,
        "demo": state.settings.demo, "dtype": engine_precision(state.engine), "max_model_len": state.max_model_len,
        "running": s.running, "waiting": s.waiting, "kv_cache_usage": s.kv_usage,
        "prefix_cache_hit_rate": s.prefix_cache_hit_rate, "num_blocks": s.num_blocks,
        "block_size": s.block_size, "num_preemptions": s.num_preemptions,
        "completion_tokens_total": int(total), "tokens_per_second": None if tps is None else round(tps, 2),
    }}

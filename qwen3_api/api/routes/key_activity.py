"""The calling key's own activity: its usage by day and model, and its generations (page, CSV).

The self-service side of routes/admin_activity.py: the same answers, always filtered by the caller's key (an
``sk-`` key, or a console session signed in with one), so a key never sees another key's rows.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from qwen3_api.api.deps import GatewayDep, PrincipalDep
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

router = APIRouter(prefix="/v1/key", tags=["keys"])
GenerationFilters = Annotated[GenerationQuery, Depends(generation_query)]


@router.get("/usage")
async def my_usage(principal: PrincipalDep, gateway: GatewayDep, days: Days = 30) -> dict[str, Any]:
    """This key's requests, tokens and cost per UTC day and model over the last ``days`` days."""
    return await usage_by_day(gateway, days, principal.key_hash)


@router.get("/generations")
async def my_generations(principal: PrincipalDep, gateway: GatewayDep, filters: GenerationFilters,
                         limit: Page = 50, offset: Offset = 0) -> dict[str, Any]:
    """This key's generations, newest first, with the admin list's filters (model, status, time, id)."""
    return await page_of_generations(gateway, filters.filter(principal.key_hash), limit, offset)


@router.get("/generations.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "every matching row, newest first"}})
async def my_generations_csv(principal: PrincipalDep, gateway: GatewayDep,
                             filters: GenerationFilters) -> StreamingResponse:
    """This key's generations as CSV (all matching rows)."""
    where = filters.filter(principal.key_hash)
    await gateway.writer.flush()
    return csv_response(gateway, where, "generations.csv")

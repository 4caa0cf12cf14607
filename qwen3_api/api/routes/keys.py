"""The caller's own key and generations: ``GET /v1/key`` (OpenRouter's ``/api/v1/key``), ``GET /v1/generation``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from qwen3_api.api.deps import GatewayDep, PrincipalDep

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/key")
async def my_key(principal: PrincipalDep, gateway: GatewayDep) -> dict[str, Any]:
    """The calling key: limits, credit left, usage."""
    return await gateway.key_info(principal)


@router.get("/generation")
async def my_generation(id: Annotated[str, Query(min_length=1, max_length=100)], principal: PrincipalDep,
                        gateway: GatewayDep) -> dict[str, Any]:
    """One generation's ledger row (tokens, cost, status, timing), to the key that made it."""
    record = await gateway.get_generation(principal, id)
    return {"data": record.to_dict()}

"""OpenAI's Responses API: parse, depend, call the service (api/serving_responses.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from qwen3_api.api.deps import PrincipalDep, ResponsesServiceDep
from qwen3_api.api.schemas_responses import CreateResponseRequest, InputTokensRequest

router = APIRouter(prefix="/v1/responses", tags=["responses"])
_ID = Annotated[str, Path(min_length=1, max_length=100)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid parameters"}, 401: {"description": "bad API key"},
    402: {"description": "insufficient credits"}, 404: {"description": "unknown model or response"},
    429: {"description": "rate limited"}}


@router.post("", responses=_ERRORS)
async def create_response(req: CreateResponseRequest, service: ResponsesServiceDep,
                          principal: PrincipalDep) -> Response:
    """A model response (OpenAI's Responses API): text, reasoning and function calls as output items, streamed
    as typed events with ``stream``; kept for ``previous_response_id`` unless ``store`` is false."""
    return await service.create(req, principal)


@router.post("/input_tokens", responses=_ERRORS)
async def count_input_tokens(req: InputTokensRequest, service: ResponsesServiceDep,
                             principal: PrincipalDep) -> dict[str, Any]:
    """The input's token count, exactly as ``POST /v1/responses`` would bill it; free."""
    return await service.count(req, principal)


@router.get("/{response_id}", responses=_ERRORS)
async def get_response(response_id: _ID, service: ResponsesServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """A stored response, to the key that made it."""
    return await service.get(response_id, principal)


@router.delete("/{response_id}", responses=_ERRORS)
async def delete_response(response_id: _ID, service: ResponsesServiceDep,
                          principal: PrincipalDep) -> dict[str, Any]:
    """Delete a stored response (it can no longer be continued)."""
    return await service.delete(response_id, principal)


@router.get("/{response_id}/input_items", responses=_ERRORS)
async def list_input_items(response_id: _ID, service: ResponsesServiceDep, principal: PrincipalDep,
                           after: Annotated[str | None, Query(max_length=100)] = None,
                           limit: Annotated[int, Query(ge=1, le=100)] = 20,
                           order: Annotated[Literal["asc", "desc"], Query()] = "desc",
                           include: Annotated[list[str] | None, Query(alias="include[]")] = None) -> dict[str, Any]:
    """The input items a stored response was given (OpenAI's cursor list)."""
    return await service.input_items(response_id, principal, after=after, limit=limit, order=order)

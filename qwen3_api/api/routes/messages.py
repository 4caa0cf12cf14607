"""Anthropic's Messages API: parse, depend, call the service (api/serving_messages.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from qwen3_api.api.deps import AnthropicPrincipalDep, MessagesServiceDep
from qwen3_api.api.schemas_messages import CountTokensRequest, CreateMessageRequest

router = APIRouter(prefix="/v1/messages", tags=["messages"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid_request_error"}, 401: {"description": "authentication_error"},
    402: {"description": "billing_error"}, 404: {"description": "not_found_error"},
    429: {"description": "rate_limit_error"}}


@router.post("", responses=_ERRORS)
async def create_message(req: CreateMessageRequest, service: MessagesServiceDep,
                         principal: AnthropicPrincipalDep) -> Response:
    """A message (Anthropic's Messages API): thinking, text and tool_use blocks, streamed as Anthropic's events
    with ``stream``. The key goes in ``x-api-key`` (or ``Authorization: Bearer``); ``anthropic-version`` is
    accepted."""
    return await service.create(req, principal)


@router.post("/count_tokens", responses=_ERRORS)
async def count_tokens(req: CountTokensRequest, service: MessagesServiceDep,
                       principal: AnthropicPrincipalDep) -> dict[str, Any]:
    """``input_tokens``: the prompt tokens ``POST /v1/messages`` would bill for this conversation; free."""
    return await service.count(req, principal)

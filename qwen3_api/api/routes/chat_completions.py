"""POST /v1/chat/completions: parse, depend, call the service (api/serving_chat.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from qwen3_api.api.deps import ChatServiceDep, PrincipalDep
from qwen3_api.api.responses import ChatCompletionResponse
from qwen3_api.api.schemas import ChatCompletionRequest

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses={400: {"description": "invalid parameters"}, 401: {"description": "bad API key"},
                        402: {"description": "insufficient credits"}, 404: {"description": "unknown model"},
                        413: {"description": "body too large"}, 429: {"description": "rate limited"}})
async def create_chat_completion(req: ChatCompletionRequest, service: ChatServiceDep,
                                 principal: PrincipalDep) -> Response:
    """Chat completion, OpenAI-compatible, with reasoning, tools, structured output and streaming."""
    return await service.create(req, principal)

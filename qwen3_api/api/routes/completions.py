"""POST /v1/completions (legacy text completion): parse, depend, call the service (api/serving_completion.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from qwen3_api.api.deps import CompletionServiceDep, PrincipalDep
from qwen3_api.api.responses import CompletionResponse
from qwen3_api.api.schemas import CompletionRequest

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=CompletionResponse,
             responses={400: {"description": "invalid parameters"}, 404: {"description": "unknown model"}})
async def create_completion(req: CompletionRequest, service: CompletionServiceDep, principal: PrincipalDep
                            ) -> Response:
    """Complete a raw prompt. Streaming sends ``text_completion`` chunks, then ``[DONE]``."""
    return await service.create(req, principal)

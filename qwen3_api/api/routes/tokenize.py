"""The tokenizer endpoints (vLLM's ``/tokenize`` and ``/detokenize``) and the chat-template render: parse, depend,
call the service (api/serving_tokenize.py). Free of charge, behind the same keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qwen3_api.api.deps import PrincipalDep, TokenizeServiceDep
from qwen3_api.api.schemas import ChatCompletionRequest
from qwen3_api.api.schemas_tokenize import DetokenizeRequest, TokenizeRequest

router = APIRouter(tags=["tokenizer"])
_ERRORS: dict[int | str, dict[str, Any]] = {400: {"description": "invalid parameters"},
                                            401: {"description": "bad API key"},
                                            404: {"description": "unknown model"}}


@router.post("/tokenize", responses=_ERRORS)
async def tokenize(req: TokenizeRequest, service: TokenizeServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """Token ids of a ``prompt``, or of chat ``messages`` rendered with the checkpoint's template:
    ``{count, max_model_len, tokens, token_strs}``."""
    return service.tokenize(req, principal)


@router.post("/detokenize", responses=_ERRORS)
async def detokenize(req: DetokenizeRequest, service: TokenizeServiceDep, principal: PrincipalDep
                     ) -> dict[str, Any]:
    """The text of token ids (special tokens kept): ``{prompt}``."""
    return service.detokenize(req, principal)


@router.post("/v1/chat/completions/render", responses=_ERRORS)
async def render_chat(req: ChatCompletionRequest, service: TokenizeServiceDep, principal: PrincipalDep
                      ) -> dict[str, Any]:
    """The prompt (text and ids), completion budget and thinking a chat completion with this body would run."""
    return service.render(req, principal)

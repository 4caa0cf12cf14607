"""Response bodies and stream chunks, shaped exactly as OpenAI's (plus OpenRouter's reasoning and cost).

Fields the spec marks required-but-nullable (``content``, ``refusal``, ``logprobs``) are always present;
optional arrays (``tool_calls``) are left out when empty because the spec does not allow null there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer

from qwen3_api.platform.meter import Meter


class _Omit(BaseModel):
    """A model whose fields listed in ``_omit_none`` are dropped from the JSON when they are None."""

    _omit_none: tuple[str, ...] = ()

    @model_serializer(mode="wrap")
    def _drop(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in self._omit_none:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ResponseMessage(_Omit):
    _omit_none = ("tool_calls",)
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None
    native_finish_reason: str | None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class UsageBody(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)
    # OpenRouter's exact price of the request, in the catalog's currency (a JSON number).
    cost: float | None = None


def usage_body(meter: Meter) -> UsageBody:
    """OpenAI's usage plus OpenRouter's ``cost`` (the settled cost, a number in the catalog's currency)."""
    u = meter.usage
    return UsageBody(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                     total_tokens=u.prompt_tokens + u.completion_tokens,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
                     completion_tokens_details=CompletionTokensDetails(reasoning_tokens=u.reasoning_tokens),
                     cost=float(meter.cost) if meter.cost is not None else None)


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageBody | None = None


class FunctionCallDelta(_Omit):
    _omit_none = ("name", "arguments")
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Omit):
    _omit_none = ("id", "type", "function")
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class Delta(_Omit):
    _omit_none = ("role", "content", "reasoning", "reasoning_content", "tool_calls", "refusal")
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None


class ChunkChoice(_Omit):
    _omit_none = ("logprobs", "native_finish_reason")
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None


class ChatCompletionChunk(_Omit):
    _omit_none = ("usage",)
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageBody | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Omit):
    _omit_none = ("native_finish_reason",)
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None
    native_finish_reason: str | None = None


class CompletionResponse(_Omit):
    _omit_none = ("usage",)
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageBody | None = None


class ModelCard(BaseModel):
    """An entry of /v1/models: OpenAI's id/object/created/owned_by plus OpenRouter's catalog fields."""

    model_config = {"extra": "allow"}
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    context_length: int | None = None
    hosting: Literal["local", "upstream"] | None = None  # served by this server's engine, or forwarded
    quantization: str | None = None  # the local engine's precision (fp32 / bf16 / fp16); upstream: unknown


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail

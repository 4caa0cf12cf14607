"""Request bodies of the OpenAI-compatible endpoints: OpenAI's fields plus OpenRouter's.

Unknown fields are accepted and ignored (clients send vendor extras); every known field is range-checked here
so a bad value is a 400 naming the field before any work is done.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    """One part of an array-of-parts message content. Only text parts exist for a text-only model."""

    type: Literal["text"] = "text"
    text: str


class FunctionCall(_Lenient):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Lenient):
    """A tool call of an earlier assistant turn, as the client replays it in the history."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    """One message of the conversation. Earlier reasoning is accepted under either field name."""

    # _content_required's rule in the published schema: content (not null), or an assistant's tool calls.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"required": ["role", "tool_calls"],
         "properties": {"role": {"const": "assistant"}, "tool_calls": {"type": "array", "minItems": 1}}},
    ]})

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs 'content'")
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs 'content' or 'tool_calls'")
        return self

    def text(self) -> str:
        """The content as one string (text parts joined as the OpenAI API does)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class FunctionDefinition(_Lenient):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JSONSchemaFormat(_Lenient):
    name: Annotated[str, Field(min_length=1, max_length=64)] = "response"
    description: str | None = None
    # `schema` shadows a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    model_config = ConfigDict(json_schema_extra={  # _schema_given, in the published schema
        "if": {"properties": {"type": {"const": "json_schema"}}},
        "then": {"required": ["json_schema"], "properties": {"json_schema": {"type": "object"}}}})

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs a 'json_schema' object")
        return self


class StreamOptions(_Lenient):
    include_usage: bool = False


class Reasoning(_Lenient):
    """OpenRouter's reasoning object. ``effort`` and ``max_tokens`` are alternatives."""

    model_config = ConfigDict(json_schema_extra={"not": {  # _one_budget, in the published schema
        "required": ["effort", "max_tokens"],
        "properties": {"effort": {"type": "string"}, "max_tokens": {"type": "integer"}}}})

    effort: ReasoningEffort | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    exclude: bool = False
    enabled: bool | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> Reasoning:
        if self.effort is not None and self.max_tokens is not None:
            raise ValueError("send reasoning.effort or reasoning.max_tokens, not both")
        return self


# Empty stop strings are refused by _no_empty_stop (naming "stop"); the schema says so with minLength.
_StopString = Annotated[str, Field(json_schema_extra={"minLength": 1})]
Stop = _StopString | Annotated[list[_StopString], Field(max_length=16)] | None


class SamplingFields(_Lenient):
    """The sampling fields shared by chat and legacy completions (ranges as in the seed document)."""

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_a: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=2.0)] | None = None
    # Keys are token ids (the vocabulary's size is checked against the tokenizer).
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]],
                          Field(json_schema_extra={"propertyNames": {"pattern": "^[0-9]+$"}})] | None = None
    # The sampler's generator takes any 64-bit seed; the schema publishes the range every JSON number holds
    # exactly (a validator comparing as doubles would let 2**64 + 1000 pass a maximum of 2**64 - 1).
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1, json_schema_extra={
        "minimum": -(2**53 - 1), "maximum": 2**53 - 1})] | None = None
    stop: Stop = None
    n: Annotated[int, Field(ge=1)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, v: Stop) -> Stop:
        items = [v] if isinstance(v, str) else (v or [])
        if any(s == "" for s in items):
            raise ValueError("stop strings must not be empty")
        return v

    def stop_list(self) -> list[str]:
        """``stop`` as a list (a single string is one stop string)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions.

    ``verbosity``: ``low`` appends ``VERBOSITY_INSTRUCTIONS["low"]`` to the system prompt (one is created when
    the conversation has none), ``high`` appends ``VERBOSITY_INSTRUCTIONS["high"]``, ``medium`` changes nothing.
    ``structured_outputs`` is a capability flag in the seed document, accepted and ignored.
    """

    # _consistent's rules that JSON Schema can say, in the published schema (a named tool_choice must be
    # one of tools: that cross-reference it cannot).
    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"required": ["top_logprobs"], "properties": {"top_logprobs": {"type": "integer"}}},
         "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}},
        {"if": {"required": ["tool_choice"], "properties": {"tool_choice": {"const": "required"}}},
         "then": {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}}},
    ]})

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    reasoning_effort: ReasoningEffort | None = None
    include_reasoning: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    structured_outputs: Any = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise _FieldError("top_logprobs", "top_logprobs requires logprobs to be true")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise _FieldError("tool_choice",
                                  f"tool_choice names function {self.tool_choice.function.name!r}, "
                                  "which is not in tools")
        if self.tool_choice == "required" and not self.tools:
            raise _FieldError("tool_choice", "tool_choice 'required' needs at least one tool")
        return self

    def limit(self) -> int | None:
        """The completion budget asked for: max_completion_tokens wins over the older max_tokens."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    """POST /v1/completions (legacy text completion): the same sampling, a raw prompt, no template."""

    # One prompt: text, or token ids (the vocabulary's upper bound is checked against the tokenizer).
    prompt: (Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]],
                                                            Field(min_length=1, max_length=1)]
             | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)])
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    # Fill-in-the-middle is refused (_no_suffix): only an empty suffix is accepted, and the schema says so.
    suffix: Annotated[str, Field(json_schema_extra={"maxLength": 0})] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, v: Any) -> Any:
        # Said plainly here: the union's own errors would name its first member ("should be a valid string").
        if v == "" or v == [] or v == [""]:
            raise ValueError("prompt must not be empty")
        if isinstance(v, list) and (any(isinstance(x, list) for x in v)
                                    or len(v) > 1 and any(isinstance(x, str) for x in v)):
            raise ValueError("a batch of prompts is not supported: send one prompt (a string, or one array of "
                             "token ids) per request")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("suffix (fill-in-the-middle) is not supported by this model")
        return v

    def limit(self) -> int | None:
        return self.max_tokens


class _FieldError(ValueError):
    """A cross-field check that knows which field is at fault (turned into the error's ``param``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


VERBOSITY_INSTRUCTIONS: dict[str, str] = {
    "low": "Be concise: answer in as few words as the question allows, without preamble.",
    "high": "Be thorough: give a detailed, complete answer with explanations and examples.",
}

"""Request bodies of OpenAI's Responses API (``POST /v1/responses``, ``POST /v1/responses/input_tokens``).

What a text-only model with function tools can honour is modelled; what it cannot (images, files, built-in tools,
background runs, conversations objects, prompt templates) is refused with a 400 naming the field and the type, so
a client never mistakes a silently dropped feature for an answer. Unknown fields are ignored, as on the chat route.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from qwen3_api.api.schema_parts import FieldError, Lenient, SamplingExtras, validate_part

_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


# Content parts a text model reads; input_text in user turns, output_text / refusal in replayed assistant turns.
_TEXT_PARTS = {"input_text", "output_text", "text", "summary_text", "reasoning_text"}
_UNSUPPORTED_PARTS = {"input_image": "images", "input_file": "files", "input_audio": "audio"}
SUPPORTED_ITEMS = ("message", "function_call", "function_call_output", "reasoning")


class ContentPart(Lenient):
    type: str
    text: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type in _UNSUPPORTED_PARTS:
            raise ValueError(f"content of type '{self.type}' is not supported: this model reads text only "
                             f"({_UNSUPPORTED_PARTS[self.type]} cannot be given to it)")
        if self.type == "refusal":
            self.text = self.refusal or ""
        elif self.type not in _TEXT_PARTS:
            raise ValueError(f"unknown content type '{self.type}' (expected input_text or output_text)")
        if self.text is None:
            raise ValueError(f"a '{self.type}' content part needs 'text'")
        return self


def parts_text(content: str | list[ContentPart] | None) -> str:
    """A content field as one string (parts joined, as the chat route joins text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content)


class MessageItem(Lenient):
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(Lenient):
    type: Literal["function_call"]
    id: str | None = None
    call_id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    arguments: str


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    id: str | None = None
    call_id: Annotated[str, Field(min_length=1)]
    output: str | list[ContentPart]


class ReasoningItem(Lenient):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ContentPart] = Field(default_factory=list)
    content: list[ContentPart] | None = None
    encrypted_content: str | None = None

    def text(self) -> str:
        """The thought as the template takes it back: its reasoning_text, else its summary."""
        return parts_text(self.content) if self.content else "\n\n".join(p.text or "" for p in self.summary)


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem
_ITEM_MODELS: dict[str, type[BaseModel]] = {"message": MessageItem, "function_call": FunctionCallItem,
                                            "function_call_output": FunctionCallOutputItem,
                                            "reasoning": ReasoningItem}


class FunctionTool(Lenient):
    type: Literal["function"] = "function"
    name: _NAME
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(Lenient):
    type: Literal["function"]
    name: str


class TextFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: Annotated[str, Field(min_length=1, max_length=64)] = "response"
    description: str | None = None
    # `schema` shadows a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise FieldError("text.format.schema", "text.format of type 'json_schema' needs a 'schema' object")
        return self


class TextParam(Lenient):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningParam(Lenient):
    """OpenAI's ``reasoning``: effort maps to thinking on/off and the budget (chat's effort shares); ``summary``
    is accepted and has no effect (the whole thought is returned as reasoning_text, never a summary)."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


_Metadata = Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                      Field(max_length=16)]


class ResponsesInput(Lenient):
    """What both ``/v1/responses`` and ``/v1/responses/input_tokens`` read to build the prompt."""

    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    previous_response_id: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _items(cls, v: Any) -> Any:
        # Checked here so a client hears which item and which type is not served, not a union's guesses.
        if not isinstance(v, list):
            return v
        items = []
        for i, item in enumerate(v):
            kind = item.get("type", "message") if isinstance(item, dict) else None
            if kind not in _ITEM_MODELS:
                raise FieldError(f"input[{i}].type", f"input item type {kind!r} is not supported: this server "
                                 f"takes {', '.join(SUPPORTED_ITEMS)} items (send the content itself rather "
                                 "than a reference to a stored item)")
            items.append(validate_part(_ITEM_MODELS[kind], item, f"input[{i}]"))
        return items

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools(cls, v: Any) -> Any:
        for i, tool in enumerate(v if isinstance(v, list) else []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise FieldError(f"tools[{i}].type", f"tool type {kind!r} is not supported: this server runs "
                                 "function tools only (the model writes the call, your code runs it)")
        return v

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _function_choice(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("type") != "function":
            raise FieldError("tool_choice", f"tool_choice of type {v.get('type')!r} is not supported: use "
                             "'none', 'auto', 'required' or {\"type\": \"function\", \"name\": ...}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesInput:
        if isinstance(self.tool_choice, FunctionChoice):
            if self.tool_choice.name not in {t.name for t in self.tools or []}:
                raise FieldError("tool_choice", f"tool_choice names function {self.tool_choice.name!r}, which "
                                 "is not in tools")
        if self.tool_choice == "required" and not self.tools:
            raise FieldError("tool_choice", "tool_choice 'required' needs at least one tool")
        return self


class CreateResponseRequest(ResponsesInput, SamplingExtras):
    """POST /v1/responses (with the chat route's top_k and SamplingExtras as extensions)."""

    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False
    store: bool = True
    metadata: _Metadata | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    # Accepted and without effect here: OpenAI's caching hints and output extras (an encrypted thought is
    # never needed: the reasoning item carries the thought in clear and is fed back as it is).
    include: list[str] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    # Refused when set (_served): there is nothing behind them on this server.
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_tool_calls: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _served(self) -> CreateResponseRequest:
        refused = {"background": self.background and "background responses are not supported: send the request "
                   "and read the stream (stream: true) instead",
                   "conversation": self.conversation is not None and "conversation objects are not supported: "
                   "continue with previous_response_id",
                   "prompt": self.prompt is not None and "stored prompt templates are not supported: send "
                   "instructions and input",
                   "top_logprobs": bool(self.top_logprobs) and "logprobs are not supported on /v1/responses (use "
                   "/v1/chat/completions with logprobs)",
                   "max_tool_calls": self.max_tool_calls is not None and "max_tool_calls is not supported: the "
                   "model makes at most parallel_tool_calls calls per turn and your code runs them"}
        for param, message in refused.items():
            if message:
                raise FieldError(param, message)
        return self


class InputTokensRequest(ResponsesInput):
    """POST /v1/responses/input_tokens: the prompt's token count, exactly as /v1/responses would bill it."""

    model: str | None = None  # optional in OpenAI's API: the served model

"""Request bodies of Anthropic's Messages API (``POST /v1/messages``, ``POST /v1/messages/count_tokens``).

Text, tool use and thinking are modelled; images, documents, server tools (web search, code execution, bash,
text editor, computer use), MCP servers and containers are refused with a 400 naming the block or tool type.
``cache_control`` marks are accepted and have no effect: the prefix cache reuses any shared prefix by itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from qwen3_api.api.schema_parts import FieldError, Lenient, SamplingExtras, validate_part

# Why each block type cannot be taken: a text-only model, or a tool that runs on the provider's side.
_UNSUPPORTED_BLOCKS = {"image": "this model reads text only", "document": "this model reads text only",
                       "search_result": "this server has no search", "container_upload": "this server runs no code",
                       "server_tool_use": "this server runs no server tools",
                       "web_search_tool_result": "this server runs no server tools",
                       "web_fetch_tool_result": "this server runs no server tools",
                       "code_execution_tool_result": "this server runs no server tools",
                       "mcp_tool_use": "this server connects to no MCP servers",
                       "mcp_tool_result": "this server connects to no MCP servers"}


def _refuse_block(kind: Any, where: str) -> FieldError:
    if kind in _UNSUPPORTED_BLOCKS:
        return FieldError(f"{where}.type", f"content blocks of type '{kind}' are not supported: "
                          f"{_UNSUPPORTED_BLOCKS[kind]}")
    return FieldError(f"{where}.type", f"unknown content block type {kind!r}")


class TextBlock(Lenient):
    type: Literal["text"]
    text: str


class ThinkingBlock(Lenient):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Lenient):
    """Accepted in history and dropped: an encrypted thought (another server's) cannot be read back here."""

    type: Literal["redacted_thinking"]
    data: str = ""


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    input: dict[str, Any]


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    content: str | list[TextBlock] | None = None
    is_error: bool = False

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        for i, block in enumerate(v if isinstance(v, list) else []):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind != "text":
                raise _refuse_block(kind, f"content[{i}]")
        return v

    def text(self) -> str:
        body = self.content if isinstance(self.content, str) else "\n\n".join(b.text for b in self.content or [])
        # The template has no error flag for a tool's answer: the model reads it in the text.
        return f"Error: {body}" if self.is_error else body


Block = TextBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock | ToolResultBlock
_BLOCKS: dict[str, type[Lenient]] = {"text": TextBlock, "thinking": ThinkingBlock,
                                      "redacted_thinking": RedactedThinkingBlock, "tool_use": ToolUseBlock,
                                      "tool_result": ToolResultBlock}
_ROLE_BLOCKS = {"user": {"text", "tool_result"}, "assistant": {"text", "thinking", "redacted_thinking", "tool_use"}}


class MessageParam(Lenient):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(Lenient):
    type: Literal["custom"] | None = None
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise FieldError("tool_choice.name", "tool_choice of type 'tool' needs the tool's 'name'")
        return self


class Thinking(Lenient):
    """``enabled`` (a budget), ``adaptive`` (thinking without a budget), ``disabled``. Anthropic asks for a budget
    of at least 1,024; any budget below ``max_tokens`` is taken here (small models, short answers)."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _budget(self) -> Thinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise FieldError("thinking.budget_tokens", "thinking of type 'enabled' needs 'budget_tokens'")
        return self


class OutputFormat(Lenient):
    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(Lenient):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


class MessagesInput(Lenient):
    """What both ``/v1/messages`` and ``/v1/messages/count_tokens`` read to build the prompt."""

    model: str
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    mcp_servers: list[Any] | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _blocks(cls, v: Any) -> Any:
        # Block by block, so an unsupported block is named with its place and type (not a union's guesses).
        for i, message in enumerate(v if isinstance(v, list) else []):
            content = message.get("content") if isinstance(message, dict) else None
            role = message.get("role") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            blocks = []
            for j, block in enumerate(content):
                kind = block.get("type") if isinstance(block, dict) else None
                where = f"messages[{i}].content[{j}]"
                if kind not in _BLOCKS:
                    raise _refuse_block(kind, where)
                if role in _ROLE_BLOCKS and kind not in _ROLE_BLOCKS[role]:
                    raise FieldError(f"{where}.type", f"a {role} message cannot hold a '{kind}' block")
                blocks.append(validate_part(_BLOCKS[kind], block, where))
            message = {**message, "content": blocks}
            v[i] = message
        return v

    @field_validator("tools", mode="before")
    @classmethod
    def _custom_tools(cls, v: Any) -> Any:
        for i, tool in enumerate(v if isinstance(v, list) else []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                raise FieldError(f"tools[{i}].type", f"tool type {kind!r} is not supported: this server runs "
                                 "client tools only (the model writes the tool_use, your code runs it)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MessagesInput:
        if self.mcp_servers:
            raise FieldError("mcp_servers", "MCP servers are not supported: pass their tools as client tools")
        if self.tool_choice is not None and self.tool_choice.type == "tool":
            if self.tool_choice.name not in {t.name for t in self.tools or []}:
                raise FieldError("tool_choice.name", f"tool_choice names tool {self.tool_choice.name!r}, which is "
                                 "not in tools")
        if self.tool_choice is not None and self.tool_choice.type == "any" and not self.tools:
            raise FieldError("tool_choice", "tool_choice 'any' needs at least one tool")
        if self.messages[-1].role == "assistant":
            raise FieldError(f"messages[{len(self.messages) - 1}].role", "a final assistant message (prefill) is "
                             "not supported: end the conversation with a user message")
        return self


class CreateMessageRequest(MessagesInput, SamplingExtras):
    """POST /v1/messages (with the chat route's SamplingExtras as extensions)."""

    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False
    service_tier: str | None = None
    container: Any = None

    @model_validator(mode="after")
    def _budget_fits(self) -> CreateMessageRequest:
        if self.container is not None:
            raise FieldError("container", "containers are not supported: this server runs no code")
        if self.thinking is not None and self.thinking.budget_tokens is not None \
                and self.thinking.type == "enabled" and self.thinking.budget_tokens >= self.max_tokens:
            raise FieldError("thinking.budget_tokens", f"thinking.budget_tokens ({self.thinking.budget_tokens}) "
                             f"must be less than max_tokens ({self.max_tokens})")
        return self


class CountTokensRequest(MessagesInput):
    """POST /v1/messages/count_tokens."""

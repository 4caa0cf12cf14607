"""Anthropic Messages <-> the chat layer: a Messages request as a chat request, output blocks as content blocks.

Thinking follows Anthropic's switch, not Qwen3's default: off unless ``thinking`` is ``enabled`` (with its
``budget_tokens`` as the thinking budget) or ``adaptive`` (no budget). A checkpoint that always or never thinks
(the 2507 ones) does so whatever the switch says, as on the chat route.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from qwen3_api.api.output_blocks import Block
from qwen3_api.api.schemas_messages import (
    CreateMessageRequest,
    MessagesInput,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from qwen3_api.chat.output import FinalChoice
from qwen3_api.platform.meter import Meter

log = logging.getLogger(__name__)


def _system(system: str | list[TextBlock] | None) -> str:
    if isinstance(system, list):
        return "\n\n".join(b.text for b in system)
    return system or ""


def to_messages(req: MessagesInput) -> list[dict[str, Any]]:
    """The conversation as chat messages: tool results become tool messages (before the user's text, as
    Anthropic orders them), an assistant's thinking its ``reasoning_content`` (the template decides whether
    that turn's thought is shown to the model again)."""
    out: list[dict[str, Any]] = []
    system = _system(req.system)
    if system:
        out.append({"role": "system", "content": system})
    for m in req.messages:
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts = [b.text for b in m.content if isinstance(b, TextBlock)]
        if m.role == "user":
            out += [{"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text()}
                    for b in m.content if isinstance(b, ToolResultBlock)]
            if texts or not any(isinstance(b, ToolResultBlock) for b in m.content):
                out.append({"role": "user", "content": "\n\n".join(texts)})
            continue
        message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts)}
        thought = "".join(b.thinking for b in m.content if isinstance(b, ThinkingBlock))
        if thought:
            message["reasoning_content"] = thought
        calls = [{"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(
            b.input, ensure_ascii=False)}} for b in m.content if isinstance(b, ToolUseBlock)]
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _thinking(req: MessagesInput) -> dict[str, Any]:
    t = req.thinking
    if t is None or t.type == "disabled":
        return {"enabled": False}
    if t.type == "enabled":
        return {"max_tokens": t.budget_tokens}
    effort = req.output_config.effort if req.output_config is not None else None
    return {"effort": effort} if effort else {}


def chat_body(req: MessagesInput) -> dict[str, Any]:
    """The chat completions body the request stands for (see api/dialects.py)."""
    body: dict[str, Any] = {"model": req.model, "messages": to_messages(req), "reasoning": _thinking(req)}
    if req.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.input_schema}} for t in req.tools]
    choice = req.tool_choice
    if choice is not None:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type) or \
            {"type": "function", "function": {"name": choice.name}}
        if choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.json_schema,
                                                                           "strict": True}}
    if isinstance(req, CreateMessageRequest):
        body.update(req.extras())
        body["max_tokens"] = req.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if getattr(req, name) is not None:
                body[name] = getattr(req, name)
        if req.stop_sequences:
            body["stop"] = req.stop_sequences
    return body


def signature(thinking: str) -> str:
    """The ``signature`` Anthropic's thinking blocks carry. Nothing here verifies thoughts, but clients drop or
    refuse thinking blocks whose signature is empty, so each gets a digest of its text (opaque, deterministic)."""
    return "sha256:" + hashlib.sha256(thinking.encode()).hexdigest()


def tool_input(block: Block) -> dict[str, Any]:
    """A call's arguments as the object ``tool_use.input`` must be; a model that wrote no JSON object gets ``{}``
    (logged): with ``tool_choice`` any/tool or strict schemas the grammar makes that impossible."""
    try:
        value = json.loads(block.text) if block.text.strip() else {}
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        log.warning("tool call %s: arguments are not a JSON object, sent as {}: %.200r", block.call_id, block.text)
        return {}
    return value


def content_block(block: Block) -> dict[str, Any]:
    if block.type == "reasoning":
        return {"type": "thinking", "thinking": block.text, "signature": signature(block.text)}
    if block.type == "text":
        return {"type": "text", "text": block.text}
    return {"type": "tool_use", "id": block.call_id, "name": block.name, "input": tool_input(block)}


def stop_reason(final: FinalChoice | None) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` from how the choice ended (chat/finish.py decided it)."""
    if final is None:
        return "end_turn", None
    if final.stop is not None:
        return "stop_sequence", final.stop
    return {"length": "max_tokens", "tool_calls": "tool_use"}.get(final.finish_reason, "end_turn"), None


def usage(meter: Meter, *, final: bool = True) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` are the prompt tokens not read from the prefix cache, which are
    ``cache_read_input_tokens`` (their sum is the prompt); plus our ``cost`` once settled."""
    u = meter.usage
    cached = min(u.cached_tokens, u.prompt_tokens)
    out: dict[str, Any] = {"input_tokens": u.prompt_tokens - cached, "cache_creation_input_tokens": 0,
                           "cache_read_input_tokens": cached, "output_tokens": u.completion_tokens}
    if final:
        out["cost"] = float(meter.cost) if meter.cost is not None else None
    return out

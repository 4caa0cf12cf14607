"""Responses API items <-> the chat layer: input items to chat messages, output blocks to output items.

A turn of the model is one assistant chat message, which the Responses API spreads over several items (a
``reasoning`` item, a ``message`` item, ``function_call`` items); ``to_messages`` folds consecutive assistant-side
items back into one message, so a replayed conversation renders exactly as the chat route would render it.
"""

from __future__ import annotations

import uuid
from typing import Any

from qwen3_api.api.output_blocks import Block
from qwen3_api.api.schemas_responses import (
    CreateResponseRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    InputItem,
    MessageItem,
    ReasoningItem,
    ResponsesInput,
    parts_text,
)
from qwen3_api.platform.meter import Meter

_PREFIX = {"message": "msg", "reasoning": "rs", "function_call": "fc", "function_call_output": "fco"}


def item_id(kind: str) -> str:
    """OpenAI-style item ids: ``msg_`` / ``rs_`` / ``fc_`` / ``fco_`` and 32 hex digits."""
    return f"{_PREFIX[kind]}_{uuid.uuid4().hex}"


def input_items(req: ResponsesInput) -> list[dict[str, Any]]:
    """The request's input as stored items (with ids, as GET /v1/responses/{id}/input_items lists them)."""
    raw: list[InputItem] = [MessageItem(role="user", content=req.input)] if isinstance(req.input, str) \
        else list(req.input or [])
    out = []
    for item in raw:
        data = item.model_dump(exclude_none=True)
        data["id"] = data.get("id") or item_id(item.type)
        if isinstance(item, MessageItem):
            kind = "output_text" if item.role == "assistant" else "input_text"
            text = item.content if isinstance(item.content, str) else None
            data["content"] = [{"type": kind, "text": text}] if text is not None else \
                [_part(p.model_dump(exclude_none=True), item.role) for p in item.content]  # type: ignore[union-attr]
            data["status"] = "completed"
        elif isinstance(item, FunctionCallItem | FunctionCallOutputItem):
            data["status"] = "completed"
        elif isinstance(item, ReasoningItem):
            data.setdefault("summary", [])
        out.append(data)
    return out


def _part(part: dict[str, Any], role: str) -> dict[str, Any]:
    if part.get("type") == "output_text":
        part.setdefault("annotations", [])
        part.setdefault("logprobs", [])
    return part


def to_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for ``instructions`` and the conversation's items (stored dicts or request items)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    turn: dict[str, Any] | None = None  # the assistant message being assembled

    def assistant(new_part: str) -> dict[str, Any]:
        nonlocal turn
        # A thought opens a new turn when the current one has said something already.
        if turn is not None and new_part == "reasoning" and (turn["content"] or turn["tool_calls"]):
            flush()
        if turn is None:
            turn = {"role": "assistant", "content": "", "reasoning_content": "", "tool_calls": []}
            messages.append(turn)
        return turn

    def flush() -> None:
        nonlocal turn
        if turn is not None:
            if not turn["tool_calls"]:
                del turn["tool_calls"]
            if not turn["reasoning_content"]:
                del turn["reasoning_content"]
        turn = None

    for item in items:
        kind = item.get("type", "message")
        if kind == "message" and item["role"] == "assistant":
            assistant("content")["content"] += _text(item.get("content"))
        elif kind == "message":
            flush()
            messages.append({"role": item["role"], "content": _text(item.get("content"))})
        elif kind == "reasoning":
            assistant("reasoning")["reasoning_content"] += ReasoningItem.model_validate(item).text()
        elif kind == "function_call":
            assistant("tool_calls")["tool_calls"].append({"id": item["call_id"], "type": "function", "function": {
                "name": item["name"], "arguments": item["arguments"]}})
        elif kind == "function_call_output":
            flush()
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text(item.get("output"))})
    flush()
    return messages


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text") or p.get("refusal") or "" for p in content)
    return parts_text(content)


def chat_body(req: ResponsesInput, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completions body the request stands for (see api/dialects.py)."""
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        body["tools"] = [{"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})}
                         for t in req.tools]
    if isinstance(req.tool_choice, FunctionChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
    elif req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.reasoning is not None and req.reasoning.effort is not None:
        body["reasoning"] = {"effort": req.reasoning.effort}
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": fmt.model_dump(
            by_alias=True, exclude_none=True, exclude={"type"})}
    if req.text is not None and req.text.verbosity is not None:
        body["verbosity"] = req.text.verbosity
    if isinstance(req, CreateResponseRequest):
        body.update(req.extras())
        for own, chat in (("max_output_tokens", "max_completion_tokens"), ("temperature", "temperature"),
                          ("top_p", "top_p"), ("top_k", "top_k")):
            value = getattr(req, own)
            if value is not None:
                body[chat] = value
    return body


def output_item(block: Block, item_ids: dict[int, str], index: int, status: str) -> dict[str, Any]:
    """The output item of one block (``status``: in_progress while streaming, then completed / incomplete)."""
    item_id = item_ids.setdefault(index, item_id_for(block))
    if block.type == "reasoning":
        content = [{"type": "reasoning_text", "text": block.text}] if status != "in_progress" else []
        return {"type": "reasoning", "id": item_id, "summary": [], "content": content, "status": status}
    if block.type == "text":
        content = [output_text(block.text)] if status != "in_progress" else []
        return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}
    return {"type": "function_call", "id": item_id, "call_id": block.call_id, "name": block.name,
            "arguments": block.text if status != "in_progress" else "", "status": status}


def item_id_for(block: Block) -> str:
    return item_id({"reasoning": "reasoning", "text": "message", "tool_call": "function_call"}[block.type])


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def usage(meter: Meter) -> dict[str, Any]:
    """OpenAI's Responses usage plus OpenRouter's ``cost`` (the settled cost, in the catalog's currency)."""
    u = meter.usage
    return {"input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "cost": float(meter.cost) if meter.cost is not None else None}

"""OpenAI's Responses API as one service: input items -> a chat request -> the chat loop -> output items or events.

``create``: the conversation so far (``previous_response_id``: the stored items, one read) plus the input becomes a
chat request (api/responses_items.py, api/dialects.py), prepared by the chat service's own ``prepare_chat`` and run
under the request's meter (endpoint ``/v1/responses`` on the ledger row); the output blocks become output items
(whole) or the typed event sequence with ``sequence_number``s (stream). A stored response (``store``, the default)
is written before the body or the ``response.completed`` event goes out, so it can be continued at once.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response

from qwen3_api.api.dialects import Turn, chat_request, local_entry, prepare, renamer
from qwen3_api.api.output_blocks import BlockOp, BlockSequencer
from qwen3_api.api.responses_items import chat_body, input_items, output_item, output_text, to_messages, usage
from qwen3_api.api.schemas import ChatCompletionRequest
from qwen3_api.api.schemas_responses import CreateResponseRequest, FunctionChoice, ResponsesInput
from qwen3_api.api.serving_chat import PreparedChat, chat_prompt
from qwen3_api.api.state import AppState
from qwen3_api.api.streaming import SSEResponse, sse_named, stream_error, with_keepalive
from qwen3_api.errors import APIError
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.principal import Principal
from qwen3_api.platform.response_store import StoredResponse

ENDPOINT = "/v1/responses"
# Chat parameter -> Responses parameter, for errors raised by the chat layer (api/dialects.py).
RENAME = renamer({"messages": "input", "max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
                  "response_format.json_schema.schema": "text.format.schema", "response_format": "text.format",
                  "verbosity": "text.verbosity"})


def not_found(response_id: str) -> APIError:
    return APIError(404, f"No response with id '{response_id}' was found for this key.", "invalid_request_error",
                    param="response_id", code="response_not_found")


@dataclass(slots=True)
class _Call:
    """One request on its way: what the body and the events are built from."""

    req: CreateResponseRequest
    meter: Meter
    prep: PreparedChat
    inputs: list[dict[str, Any]]        # this request's input items (with ids)
    conversation: list[dict[str, Any]]  # earlier turns + inputs
    created_at: int = field(default_factory=lambda: int(time.time()))
    item_ids: dict[int, str] = field(default_factory=dict)

    def status_of(self, turn: Turn, index: int) -> str:
        """An item is incomplete when the budget cut it: the last one of a turn that ended on ``length``."""
        cut = turn.final is not None and turn.final.finish_reason == "length"
        return "incomplete" if cut and index == len(turn.blocks) - 1 else "completed"

    def output(self, turn: Turn) -> list[dict[str, Any]]:
        return [output_item(b, self.item_ids, i, self.status_of(turn, i)) for i, b in enumerate(turn.blocks)]

    def body(self, status: str, output: list[dict[str, Any]], *, error: dict[str, Any] | None = None,
             final: bool = False) -> dict[str, Any]:
        """The response object (OpenAI's ``Response``), plus our ``usage.cost``."""
        req, params = self.req, self.prep.params
        fmt = req.text.format.model_dump(by_alias=True, exclude_none=True) if req.text and req.text.format else None
        if fmt is not None and fmt["type"] != "json_schema":
            fmt = {"type": fmt["type"]}  # name / schema belong to json_schema only
        choice = req.tool_choice.model_dump() if isinstance(req.tool_choice, FunctionChoice) else \
            req.tool_choice or ("auto" if req.tools else "none")
        body: dict[str, Any] = {
            "id": self.meter.generation_id, "object": "response", "created_at": self.created_at, "status": status,
            "completed_at": int(time.time()) if final and status == "completed" else None,
            "error": error, "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens, "model": self.meter.entry.id,
            "output": output, "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": req.reasoning.effort if req.reasoning else None,
                          "summary": req.reasoning.summary if req.reasoning else None},
            "store": req.store, "temperature": req.temperature if req.temperature is not None else params.temperature,
            "top_p": req.top_p if req.top_p is not None else params.top_p,
            "text": {"format": fmt or {"type": "text"}, "verbosity": (req.text and req.text.verbosity) or "medium"},
            "tool_choice": choice,
            "tools": [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters,
                       "strict": t.strict} for t in req.tools or []],
            "truncation": req.truncation or "disabled", "metadata": req.metadata or {}, "background": False,
            "service_tier": "default",
        }
        if final:  # the spec's usage is an object, never null: it appears once the tokens are counted
            body["usage"] = usage(self.meter)
        if req.user is not None:
            body["user"] = req.user
        return body

    def final_body(self, turn: Turn) -> dict[str, Any]:
        output = self.output(turn)
        cut = turn.final is not None and turn.final.finish_reason == "length"
        return self.body("incomplete" if cut else "completed", output, final=True)


class ResponsesService:
    """POST /v1/responses, GET/DELETE /v1/responses/{id}, GET .../input_items, POST /v1/responses/input_tokens."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    @property
    def store(self) -> Any:
        return self.state.gateway.responses

    async def create(self, req: CreateResponseRequest, principal: Principal) -> Response:
        entry = local_entry(self.state, req.model, principal, ENDPOINT)
        inputs = input_items(req)
        conversation = await self._history(req, principal) + inputs
        prep = self._prepare(req, entry, conversation)
        meter = self.state.gateway.meter(principal, entry, prompt_tokens=len(prep.prompt_ids),
                                         max_tokens=int(prep.params.max_tokens or 0),
                                         generation_id=f"resp_{uuid.uuid4().hex}", streamed=req.stream,
                                         endpoint=ENDPOINT)
        call = _Call(req, meter, prep, inputs, conversation)
        if not req.stream:
            turn = Turn(prep, meter, BlockSequencer(prep.thinking.exclude))
            await turn.run(self.state)
            body = call.final_body(turn)
            await self._keep(call, body, principal)
            return JSONResponse(body, headers=meter.headers)
        await meter.admit()  # a 402 / 429 is the response's status, before the stream starts
        return SSEResponse(with_keepalive(self._stream(call, principal), self.state.settings.keepalive_s),
                           headers=meter.headers, on_close=meter.close)

    async def count(self, req: ResponsesInput, principal: Principal) -> dict[str, Any]:
        """The prompt's tokens, exactly as ``create`` would bill them (free)."""
        entry = local_entry(self.state, req.model or self.state.settings.served_model_name, principal, ENDPOINT)
        conversation = await self._history(req, principal) + input_items(req)
        chat = self._chat(req, entry.id, to_messages(req.instructions, conversation))
        return {"object": "response.input_tokens", "input_tokens": len(chat_prompt(self.state, chat))}

    async def get(self, response_id: str, principal: Principal) -> dict[str, Any]:
        stored = await self.store.get(principal.key_hash, response_id)
        if stored is None:
            raise not_found(response_id)
        return stored.body

    async def delete(self, response_id: str, principal: Principal) -> dict[str, Any]:
        if not await self.store.delete(principal.key_hash, response_id):
            raise not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(self, response_id: str, principal: Principal, *, after: str | None, limit: int,
                          order: str) -> dict[str, Any]:
        """OpenAI's cursor list over this response's own input items (newest first unless ``order=asc``)."""
        stored = await self.store.get(principal.key_hash, response_id)
        if stored is None:
            raise not_found(response_id)
        items = stored.input_items if order == "asc" else stored.input_items[::-1]
        if after is not None:
            ids = [i["id"] for i in items]
            if after not in ids:
                raise APIError(400, f"'after' names no input item of '{response_id}'.", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else "",
                "last_id": page[-1]["id"] if page else "", "has_more": len(items) > limit}

    async def _history(self, req: ResponsesInput, principal: Principal) -> list[dict[str, Any]]:
        if req.previous_response_id is None:
            return []
        stored = await self.store.get(principal.key_hash, req.previous_response_id)
        if stored is None:
            raise APIError(400, f"Previous response with id '{req.previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        return stored.conversation

    def _chat(self, req: ResponsesInput, model: str, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
        if not messages:
            raise APIError(400, "The request has no input: send 'input' (or 'instructions').", param="input",
                           code="missing_required_parameter")
        return chat_request({**chat_body(req, messages), "model": model}, RENAME)

    def _prepare(self, req: CreateResponseRequest, entry: Any, conversation: list[dict[str, Any]]) -> PreparedChat:
        """The prepared chat request; ``truncation: auto`` drops the oldest items until the prompt fits."""
        dropped = 0
        while True:
            chat = self._chat(req, entry.id, to_messages(req.instructions, conversation[dropped:]))
            try:
                return prepare(self.state, chat, entry, RENAME)
            except APIError as exc:
                if req.truncation != "auto" or exc.code != "context_length_exceeded" \
                        or dropped >= len(conversation) - 1:
                    raise
                dropped += 1

    async def _keep(self, call: _Call, body: dict[str, Any], principal: Principal) -> None:
        if call.req.store:
            await self.store.put(principal.key_hash, StoredResponse(
                id=body["id"], body=body, input_items=call.inputs, conversation=call.conversation + body["output"]))

    async def _stream(self, call: _Call, principal: Principal) -> AsyncIterator[bytes]:
        events = _Events(call)
        yield events.emit("response.created", response=call.body("in_progress", []))
        yield events.emit("response.in_progress", response=call.body("in_progress", []))
        turn = Turn(call.prep, call.meter, BlockSequencer(call.prep.thinking.exclude))
        try:
            async with contextlib.aclosing(turn.ops(self.state)) as steps:
                async for ops in steps:
                    for op in ops:
                        for chunk in events.op(op, turn):
                            yield chunk
        except Exception as exc:  # noqa: BLE001 - the status line is sent: the failure goes in the stream
            err = stream_error(exc)
            yield events.emit("response.failed", response=call.body(
                "failed", call.output(turn), error={"code": "server_error", "message": err.message}, final=True))
            return
        body = call.final_body(turn)
        await self._keep(call, body, principal)
        yield events.emit("response.completed" if body["status"] == "completed" else "response.incomplete",
                          response=body)


class _Events:
    """The typed events of one streamed response, numbered in order."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.seq = 0

    def emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self.seq}
        self.seq += 1
        return sse_named(kind, data)

    def op(self, op: BlockOp, turn: Turn) -> list[bytes]:
        """The events of one block op: an item (and its one content part) opened, grown, or done."""
        call, i, block = self.call, op.index, op.block
        if op.kind == "open":
            item = output_item(block, call.item_ids, i, "in_progress")
            out = [self.emit("response.output_item.added", output_index=i, item=item)]
            if block.type != "tool_call":
                out.append(self.emit("response.content_part.added", item_id=item["id"], output_index=i,
                                     content_index=0, part=self._part(block.type, "")))
            return out
        item_id = call.item_ids[i]
        where = {"item_id": item_id, "output_index": i}
        if op.kind == "delta":
            if block.type == "tool_call":
                return [self.emit("response.function_call_arguments.delta", **where, delta=op.text)]
            if block.type == "reasoning":
                return [self.emit("response.reasoning_text.delta", **where, content_index=0, delta=op.text)]
            return [self.emit("response.output_text.delta", **where, content_index=0, delta=op.text, logprobs=[])]
        done = output_item(block, call.item_ids, i, call.status_of(turn, i))
        if block.type == "tool_call":
            out = [self.emit("response.function_call_arguments.done", **where, name=block.name,
                             arguments=block.text)]
        elif block.type == "reasoning":
            out = [self.emit("response.reasoning_text.done", **where, content_index=0, text=block.text)]
        else:
            out = [self.emit("response.output_text.done", **where, content_index=0, text=block.text, logprobs=[])]
        if block.type != "tool_call":
            out.append(self.emit("response.content_part.done", **where, content_index=0,
                                 part=self._part(block.type, block.text)))
        return [*out, self.emit("response.output_item.done", output_index=i, item=done)]

    @staticmethod
    def _part(kind: str, text: str) -> dict[str, Any]:
        return {"type": "reasoning_text", "text": text} if kind == "reasoning" else output_text(text)

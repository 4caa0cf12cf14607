"""Anthropic's Messages API as one service: a Messages request -> a chat request -> the chat loop -> content blocks.

``create`` translates the request (api/messages_convert.py), prepares it with the chat service's own
``prepare_chat`` and runs it under the request's meter (endpoint ``/v1/messages`` on the ledger row). A streamed
message opens with ``message_start`` once the engine has answered (so its usage already counts the prefix-cache
hits), then ``content_block_start`` / ``_delta`` / ``_stop`` per block, ``message_delta`` (stop reason, usage) and
``message_stop``; ``ping`` events keep a long prefill's connection alive. A tool call's input goes out as one
``input_json_delta`` once the call is complete: the SDK parses every delta as partial JSON, and a call is only
known to be a JSON object when it has ended. Errors take Anthropic's shape (api/anthropic_errors.py).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, Response

from qwen3_api.api.anthropic_errors import PING, anthropic_body
from qwen3_api.api.dialects import Turn, chat_request, local_entry, prepare, renamer
from qwen3_api.api.messages_convert import chat_body, content_block, signature, stop_reason, tool_input, usage
from qwen3_api.api.output_blocks import BlockOp, BlockSequencer
from qwen3_api.api.schemas_messages import CountTokensRequest, CreateMessageRequest
from qwen3_api.api.serving_chat import PreparedChat, chat_prompt
from qwen3_api.api.state import AppState
from qwen3_api.api.streaming import SSEResponse, sse_named, stream_error, with_keepalive
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.principal import Principal

ENDPOINT = "/v1/messages"
# Chat parameter -> Messages parameter, for errors raised by the chat layer (api/dialects.py).
RENAME = renamer({"stop": "stop_sequences", "max_completion_tokens": "max_tokens", "reasoning": "thinking",
                  "response_format.json_schema.schema": "output_config.format.schema",
                  "response_format": "output_config.format"})


def _message(meter: Meter, content: list[dict[str, Any]], stop: tuple[str | None, str | None],
             usage_body: dict[str, Any]) -> dict[str, Any]:
    return {"id": meter.generation_id, "type": "message", "role": "assistant", "model": meter.entry.id,
            "content": content, "stop_reason": stop[0], "stop_sequence": stop[1], "usage": usage_body}


class MessagesService:
    """POST /v1/messages and POST /v1/messages/count_tokens."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def create(self, req: CreateMessageRequest, principal: Principal) -> Response:
        entry = local_entry(self.state, req.model, principal, ENDPOINT)
        prep = prepare(self.state, chat_request(chat_body(req), RENAME), entry, RENAME)
        meter = self.state.gateway.meter(principal, entry, prompt_tokens=len(prep.prompt_ids),
                                         max_tokens=int(prep.params.max_tokens or 0),
                                         generation_id=f"msg_{uuid.uuid4().hex}", streamed=req.stream,
                                         endpoint=ENDPOINT)
        if not req.stream:
            turn = Turn(prep, meter, BlockSequencer(prep.thinking.exclude))
            await turn.run(self.state)
            body = _message(meter, [content_block(b) for b in turn.blocks], stop_reason(turn.final), usage(meter))
            return JSONResponse(body, headers=meter.headers)
        await meter.admit()  # a 402 / 429 is the response's status (Anthropic-shaped), before the stream starts
        return SSEResponse(with_keepalive(self._stream(prep, meter), self.state.settings.keepalive_s, PING),
                           headers=meter.headers, on_close=meter.close)

    async def count(self, req: CountTokensRequest, principal: Principal) -> dict[str, Any]:
        """``input_tokens``: the prompt tokens ``create`` would bill for this conversation (free)."""
        entry = local_entry(self.state, req.model, principal, ENDPOINT)
        return {"input_tokens": len(chat_prompt(self.state, chat_request(
            {**chat_body(req), "model": entry.id}, RENAME)))}

    async def _stream(self, prep: PreparedChat, meter: Meter) -> AsyncIterator[bytes]:
        events = _Events(meter)
        turn = Turn(prep, meter, BlockSequencer(prep.thinking.exclude))
        try:
            async with contextlib.aclosing(turn.ops(self.state)) as steps:
                async for ops in steps:
                    for chunk in events.start():  # after the first step: the cache hits are known
                        yield chunk
                    for op in ops:
                        for chunk in events.op(op):
                            yield chunk
        except Exception as exc:  # noqa: BLE001 - the status line is sent: the error goes in the stream
            yield sse_named("error", anthropic_body(stream_error(exc)))
            return
        for chunk in events.start():
            yield chunk
        reason, sequence = stop_reason(turn.final)
        yield sse_named("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                          "usage": usage(meter)})
        yield sse_named("message_stop", {"type": "message_stop"})


class _Events:
    """The events of one streamed message (``message_start`` once; blocks as they open, grow and close)."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.started = False

    def start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message = _message(self.meter, [], (None, None), usage(self.meter, final=False))
        return [sse_named("message_start", {"type": "message_start", "message": message}), PING]

    def op(self, op: BlockOp) -> list[bytes]:
        block, index = op.block, op.index
        if block.type == "tool_call":  # one complete object per call (see the module docstring)
            if op.kind != "close":
                return []
            start = {"type": "tool_use", "id": block.call_id, "name": block.name, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(tool_input(block), ensure_ascii=False)}
            return [self._event("content_block_start", index, content_block=start),
                    self._event("content_block_delta", index, delta=delta),
                    self._event("content_block_stop", index)]
        if op.kind == "open":
            start = {"type": "thinking", "thinking": "", "signature": ""} if block.type == "reasoning" \
                else {"type": "text", "text": ""}
            return [self._event("content_block_start", index, content_block=start)]
        if op.kind == "delta":
            delta = {"type": "thinking_delta", "thinking": op.text} if block.type == "reasoning" \
                else {"type": "text_delta", "text": op.text}
            return [self._event("content_block_delta", index, delta=delta)]
        out = []
        if block.type == "reasoning":  # as Anthropic: the signature comes last, just before the block stops
            out.append(self._event("content_block_delta", index, delta={"type": "signature_delta",
                                                                        "signature": signature(block.text)}))
        return [*out, self._event("content_block_stop", index)]

    @staticmethod
    def _event(kind: str, index: int, **fields: Any) -> bytes:
        return sse_named(kind, {"type": kind, "index": index, **fields})

"""POST /v1/chat/completions: render the conversation, generate, split reasoning / content / tool calls.

Every choice has its own ``ChoiceProcessor`` (parser state is never shared between choices); the streaming and
non-streaming paths run the same loop, so concatenated deltas equal the non-streaming fields.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from qwen3_api.api.chat_request import PreparedChat, prepare_chat
from qwen3_api.api.deps import authenticate, route_model
from qwen3_api.api.generation import Generation, new_id
from qwen3_api.api.responses import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ResponseMessage,
    TokenLogprob,
    ToolCallDelta,
    ToolCallOut,
)
from qwen3_api.api.schemas import ChatCompletionRequest
from qwen3_api.api.state import AppState, get_state
from qwen3_api.api.streaming import (
    DONE,
    SSEResponse,
    sse_error,
    sse_event,
    stream_error,
    with_keepalive,
)
from qwen3_api.api.usage import usage_body
from qwen3_api.chat.output import Delta as ChatDelta
from qwen3_api.chat.output import FinalChoice

router = APIRouter(tags=["chat"])

_FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}


def _finish_reason(final: FinalChoice) -> str:
    # The spec's enum has no "abort": a choice ended by the server (all stop strings found...) stopped.
    return final.finish_reason if final.finish_reason in _FINISH_REASONS else "stop"


class _Choices:
    """The n choices of one request: their processors, finals, and the generation's token counts."""

    def __init__(self, prep: PreparedChat, gen: Generation) -> None:
        self.prep = prep
        self.gen = gen
        self.procs = [prep.new_processor() for _ in range(prep.n)]
        self.finals: list[FinalChoice | None] = [None] * prep.n

    @property
    def open(self) -> bool:
        return any(f is None for f in self.finals)

    def feed(self, index: int, token_ids: list[int], logprobs: list[dict[int, float]] | None) -> ChatDelta:
        d = self.procs[index].feed(token_ids, logprobs)
        self.gen.completion_tokens[index] += len(token_ids)
        return d

    def finish(self, index: int, engine_reason: str | None) -> FinalChoice:
        final = self.procs[index].finish(engine_reason)
        self.finals[index] = final
        # The processor knows what it consumed (tokens after a stop string are not billed) and what was thought.
        self.gen.completion_tokens[index] = final.completion_tokens
        self.gen.reasoning_tokens[index] = final.reasoning_tokens
        return final

    def finish_all(self, engine_reason: str | None) -> None:
        """End the choices still open (the client left, or the engine ended without a reason)."""
        for i, f in enumerate(self.finals):
            if f is None:
                self.finish(i, engine_reason)

    async def run(self) -> None:
        """Drive the engine to the end (the non-streaming path)."""
        async for out in self.gen.stream():
            for o in out.outputs:
                if self.finals[o.index] is not None:
                    continue
                d = self.feed(o.index, o.token_ids, o.logprobs)
                if d.stop_matched is not None or o.finish_reason is not None:
                    self.finish(o.index, o.finish_reason if d.stop_matched is None else "stop")
            if not self.open:
                break
        await self.gen.abort()  # choices ended by stop strings leave the engine request running
        if self.open:
            self.finish_all(None)


def _logprobs(entries: list[dict[str, Any]] | None) -> ChoiceLogprobs | None:
    if entries is None:
        return None
    return ChoiceLogprobs(content=[TokenLogprob(**e) for e in entries], refusal=None)


def _message(final: FinalChoice, exclude_reasoning: bool) -> ResponseMessage:
    reasoning = None if exclude_reasoning else final.reasoning
    calls = [ToolCallOut(**c) for c in final.tool_calls] if final.tool_calls else None
    return ResponseMessage(content=final.content, reasoning=reasoning, reasoning_content=reasoning,
                           tool_calls=calls)


def _delta(d: ChatDelta, exclude_reasoning: bool) -> Delta:
    reasoning = d.reasoning if d.reasoning and not exclude_reasoning else None
    calls = [ToolCallDelta(**c.to_openai()) for c in d.tool_calls] or None
    return Delta(content=d.content or None, reasoning=reasoning, reasoning_content=reasoning, tool_calls=calls)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses={400: {"description": "invalid parameters"}, 401: {"description": "bad API key"},
                        402: {"description": "insufficient credits"}, 404: {"description": "unknown model"},
                        413: {"description": "body too large"}, 429: {"description": "rate limited"}})
async def create_chat_completion(req: ChatCompletionRequest,
                                 state: AppState = Depends(get_state),
                                 principal: Any = Depends(authenticate)) -> Response:
    """Chat completion, OpenAI-compatible, with reasoning, tools, structured output and streaming."""
    entry = await route_model(state, principal, req, "/chat/completions")
    if isinstance(entry, Response):
        return entry
    prep = prepare_chat(state, req, entry)
    rid = new_id("chatcmpl")
    created = int(time.time())
    gen = Generation(state, principal, entry, rid, prep.prompt_ids, prep.params, req.stream)
    exclude = prep.thinking.exclude

    if not req.stream:
        async with gen:
            choices = _Choices(prep, gen)
            try:
                await choices.run()
            finally:
                # A client that leaves cancels the run (api/disconnect.py): its choices still count their
                # reasoning, and the generation settles as cancelled.
                choices.finish_all("abort")
            gen.complete()
            cost = await gen.settle("completed")
        body = ChatCompletionResponse(id=rid, created=created, model=entry.id, usage=usage_body(gen, cost),
                                      choices=[ChatChoice(index=i, message=_message(f, exclude),
                                                          logprobs=_logprobs(f.logprobs),
                                                          finish_reason=_finish_reason(f),
                                                          native_finish_reason=f.native_finish_reason)
                                               for i, f in enumerate(choices.finals) if f is not None])
        return Response(body.model_dump_json(), media_type="application/json",
                        headers=gen.headers())

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    want_logprobs = bool(req.logprobs)
    await gen.__aenter__()
    choices = _Choices(prep, gen)

    def chunk(items: list[ChunkChoice], usage: Any = None) -> bytes:
        return sse_event(ChatCompletionChunk(id=rid, created=created, model=entry.id, choices=items, usage=usage))

    async def events() -> AsyncIterator[bytes]:
        queue: list[bytes] = []

        async def on_delta(i: int, d: ChatDelta, final: FinalChoice | None) -> None:
            if not d.empty:
                lp = ChoiceLogprobs(content=[TokenLogprob(**e) for e in d.logprobs], refusal=None) \
                    if want_logprobs else None
                delta = _delta(d, exclude)
                if delta.content or delta.reasoning or delta.tool_calls or lp is not None and lp.content:
                    queue.append(chunk([ChunkChoice(index=i, delta=delta, logprobs=lp)]))
            if final is not None:
                queue.append(_final_chunk(i, final))

        def _final_chunk(i: int, final: FinalChoice) -> bytes:
            tail = _delta(final.delta, exclude)
            lp = ChoiceLogprobs(content=[TokenLogprob(**e) for e in final.delta.logprobs], refusal=None) \
                if want_logprobs and final.delta.logprobs else None
            return chunk([ChunkChoice(index=i, delta=tail, logprobs=lp, finish_reason=_finish_reason(final),
                                      native_finish_reason=final.native_finish_reason)])

        try:
            # The role comes first, once per choice, as OpenAI sends it.
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))
                         for i in range(prep.n)])
            async for out in gen.stream():
                for o in out.outputs:
                    if choices.finals[o.index] is not None:
                        continue
                    d = choices.feed(o.index, o.token_ids, o.logprobs)
                    final = None
                    if d.stop_matched is not None or o.finish_reason is not None:
                        final = choices.finish(o.index, o.finish_reason if d.stop_matched is None else "stop")
                    await on_delta(o.index, d, final)
                for ev in queue:
                    yield ev
                queue.clear()
                if not choices.open:
                    break
            await gen.abort()
            for i, f in enumerate(choices.finals):
                if f is None:
                    yield _final_chunk(i, choices.finish(i, None))
            gen.complete()
            cost = await gen.settle("completed")
            if include_usage:
                yield chunk([], usage_body(gen, cost))
            yield DONE
        except Exception as exc:  # noqa: BLE001 - the status line is sent: the error goes in the stream
            gen.fail(exc)
            yield sse_error(stream_error(exc))
            yield DONE  # the stream is over: clients that wait for [DONE] stop waiting
        finally:
            choices.finish_all("abort")
            await gen.close()

    return SSEResponse(with_keepalive(events(), state.settings.keepalive_s), headers=gen.headers(),
                       on_close=gen.close)


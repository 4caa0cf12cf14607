"""POST /v1/chat/completions as one service: request -> prompt + processors -> engine stream -> chunks or a body.

``ChatCompletionService.create`` renders the conversation with the checkpoint's template, maps every field onto
the engine (SamplingParams, constraints) and the chat layer (one ``ChoiceProcessor`` per choice: parser state is
never shared), and runs one loop, ``drive``, under the request's meter. The streamed and whole responses both
consume that loop, so concatenated deltas equal the whole response's fields.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response

from qwen3_api.api.engine_run import EngineRun, metered_run, new_id
from qwen3_api.api.request_params import completion_budget, to_sampling_params
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
    usage_body,
)
from qwen3_api.api.schemas import VERBOSITY_INSTRUCTIONS, ChatCompletionRequest, NamedToolChoice
from qwen3_api.api.state import AppState
from qwen3_api.api.streaming import DONE, SSEResponse, sse_error, sse_event, stream_error, with_keepalive
from qwen3_api.api.thinking import ThinkingOptions, thinking_enabled, thinking_options
from qwen3_api.api.upstream import forward
from qwen3_api.chat.constraint import constraint_factory
from qwen3_api.chat.output import ChoiceDelta, ChoiceProcessor, FinalChoice
from qwen3_api.chat.reasoning import ThinkState
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.errors import invalid
from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.principal import Principal


@dataclass(slots=True)
class PreparedChat:
    """A chat request as the engine and the chat layer need it."""

    prompt_ids: list[int]
    params: SamplingParams
    thinking: ThinkingOptions
    n: int
    new_processor: Callable[[], ChoiceProcessor]


@dataclass(slots=True)
class ChoiceEvent:
    """What one step of the loop made visible for one choice (``final`` once it has ended)."""

    index: int
    delta: ChoiceDelta
    final: FinalChoice | None = None


def apply_verbosity(messages: list[dict[str, Any]], verbosity: str | None) -> list[dict[str, Any]]:
    """Append the verbosity instruction to the system prompt (a new one when there is none); medium: no-op."""
    instruction = VERBOSITY_INSTRUCTIONS.get(verbosity or "medium")
    if instruction is None:
        return messages
    if messages and messages[0]["role"] in ("system", "developer"):
        first = dict(messages[0])
        content = first.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content)
        first["content"] = f"{content}\n\n{instruction}" if content else instruction
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _tool_choice(req: ChatCompletionRequest) -> str | dict[str, Any]:
    if req.tool_choice is None:
        return "auto" if req.tools else "none"
    if isinstance(req.tool_choice, NamedToolChoice):
        return req.tool_choice.model_dump()
    return req.tool_choice


def _tools(req: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    return [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None


def chat_prompt(state: AppState, req: ChatCompletionRequest) -> list[int]:
    """The prompt token ids the request runs: the checkpoint's template over its messages and tools (also what
    the tokenizer endpoints and the other dialects' token counts return, so a count is the billed count)."""
    messages = apply_verbosity([m.model_dump(exclude_none=True) for m in req.messages], req.verbosity)
    # Thinking on/off must be known to render; the budget needs max_tokens, which needs the prompt length.
    kwargs = {**(req.chat_template_kwargs or {}), "enable_thinking": thinking_enabled(req)}
    return state.chat_template().encode(messages, _tools(req), True, **kwargs)


def prepare_chat(state: AppState, req: ChatCompletionRequest, entry: CatalogEntry) -> PreparedChat:
    """Render the prompt, check it fits, and map every request field onto the engine and the parsers."""
    if req.n > state.settings.max_n:
        raise invalid(f"n must be at most {state.settings.max_n} on this server", "n")
    tok = state.chat_tokenizer()
    template = state.chat_template()
    tools = _tools(req)
    tool_choice = _tool_choice(req)
    prompt_ids = chat_prompt(state, req)
    max_tokens = completion_budget(req, req.limit(), len(prompt_ids), state.max_model_len, "messages")
    thinking = thinking_options(req, max_tokens)
    # A checkpoint that never thinks (Instruct-2507): the switch is a no-op and everything is the answer.
    think_state = ThinkState.ANSWER if template.thinking_mode == "never" else None
    thinking.enabled = thinking.enabled and think_state is None
    fmt = req.response_format.model_dump(by_alias=True, exclude_none=True) if req.response_format else None
    # Compiled once per request (a bad schema is a 400 before any work); one fresh state per choice.
    factory = constraint_factory(tok, prompt_ids=prompt_ids, response_format=fmt, tools=tools,
                                 tool_choice=tool_choice, parallel_tool_calls=req.parallel_tool_calls is not False,
                                 thinking_budget=thinking.budget, max_tokens=max_tokens, think_state=think_state)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = to_sampling_params(req, max_tokens=max_tokens, vocab_size=tok.model_vocab_size,
                                defaults=entry.default_parameters, logprobs=logprobs, constraint_factory=factory)
    stop = req.stop_list()
    parse_tools = bool(tools) and tool_choice != "none"

    def new_processor() -> ChoiceProcessor:
        return ChoiceProcessor(tok, prompt_ids=prompt_ids, think_state=think_state, stop=stop,
                               parse_tool_calls=parse_tools, logprobs=bool(req.logprobs),
                               top_logprobs=req.top_logprobs or 0)

    return PreparedChat(prompt_ids=prompt_ids, params=params, thinking=thinking, n=req.n,
                        new_processor=new_processor)


class Choices:
    """The n choices of one request: their processors and finals; their token counts go into the meter.
    (Public, with ``drive``: the Responses and Messages services run the same loop.)"""

    def __init__(self, prep: PreparedChat, meter: Meter) -> None:
        self.meter = meter
        self.procs = [prep.new_processor() for _ in range(prep.n)]
        self.finals: list[FinalChoice | None] = [None] * prep.n
        self._completion = [0] * prep.n
        self._reasoning = [0] * prep.n

    @property
    def open(self) -> bool:
        return any(f is None for f in self.finals)

    def feed(self, index: int, token_ids: list[int], logprobs: list[dict[int, float]] | None) -> ChoiceDelta:
        delta = self.procs[index].feed(token_ids, logprobs)
        self._completion[index] += len(token_ids)
        self._count()
        return delta

    def finish(self, index: int, engine_reason: str | None) -> FinalChoice:
        final = self.procs[index].finish(engine_reason)
        self.finals[index] = final
        # The processor knows what it consumed (tokens after a stop string are not billed) and what was thought.
        self._completion[index] = final.completion_tokens
        self._reasoning[index] = final.reasoning_tokens
        self._count()
        return final

    def finish_all(self, engine_reason: str | None) -> list[ChoiceEvent]:
        """End the choices still open (the engine ended without a reason for them, or the client left)."""
        return [ChoiceEvent(i, ChoiceDelta(), self.finish(i, engine_reason))
                for i, f in enumerate(self.finals) if f is None]

    def _count(self) -> None:
        self.meter.usage.completion_tokens = sum(self._completion)
        self.meter.usage.reasoning_tokens = sum(self._reasoning)


async def drive(run: EngineRun, choices: Choices) -> AsyncIterator[ChoiceEvent]:
    """The one loop of a chat request: engine outputs -> each choice's processor -> events, until all ended."""
    async for out in run.outputs():
        for o in out.outputs:
            if choices.finals[o.index] is not None:
                continue
            delta = choices.feed(o.index, o.token_ids, o.logprobs)
            final = None
            if delta.stop_matched is not None or o.finish_reason is not None:
                final = choices.finish(o.index, "stop" if delta.stop_matched is not None else o.finish_reason)
            yield ChoiceEvent(o.index, delta, final)
        if not choices.open:
            break
    await run.abort()  # choices ended by stop strings leave the engine request running
    for event in choices.finish_all(None):
        yield event


def _logprobs(entries: list[dict[str, Any]] | None) -> ChoiceLogprobs | None:
    return None if entries is None else ChoiceLogprobs(content=[TokenLogprob(**e) for e in entries], refusal=None)


def _message(final: FinalChoice, exclude_reasoning: bool) -> ResponseMessage:
    reasoning = None if exclude_reasoning else final.reasoning
    calls = [ToolCallOut(**c) for c in final.tool_calls] if final.tool_calls else None
    return ResponseMessage(content=final.content, reasoning=reasoning, reasoning_content=reasoning, tool_calls=calls)


def _delta(d: ChoiceDelta, exclude_reasoning: bool) -> Delta:
    reasoning = d.reasoning if d.reasoning and not exclude_reasoning else None
    calls = [ToolCallDelta(**c.to_openai()) for c in d.tool_calls] or None
    return Delta(content=d.content or None, reasoning=reasoning, reasoning_content=reasoning, tool_calls=calls)


@dataclass(slots=True)
class _Chunks:
    """The SSE chunks of one streamed response."""

    id: str
    created: int
    model: str
    exclude_reasoning: bool
    logprobs: bool

    def chunk(self, items: list[ChunkChoice], usage: Any = None) -> bytes:
        return sse_event(ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=items,
                                             usage=usage))

    def roles(self, n: int) -> bytes:
        # The role comes first, once per choice, as OpenAI sends it.
        return self.chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(n)])

    def event(self, ev: ChoiceEvent) -> list[bytes]:
        out = []
        d = ev.delta
        if not d.empty:
            lp = ChoiceLogprobs(content=[TokenLogprob(**e) for e in d.logprobs], refusal=None) if self.logprobs \
                else None
            delta = _delta(d, self.exclude_reasoning)
            if delta.content or delta.reasoning or delta.tool_calls or (lp is not None and lp.content):
                out.append(self.chunk([ChunkChoice(index=ev.index, delta=delta, logprobs=lp)]))
        if ev.final is not None:
            final = ev.final
            lp = ChoiceLogprobs(content=[TokenLogprob(**e) for e in final.delta.logprobs], refusal=None) \
                if self.logprobs and final.delta.logprobs else None
            out.append(self.chunk([ChunkChoice(index=ev.index, delta=_delta(final.delta, self.exclude_reasoning),
                                               logprobs=lp, finish_reason=final.finish_reason,
                                               native_finish_reason=final.native_finish_reason)]))
        return out


class ChatCompletionService:
    """Chat completions, OpenAI-compatible, with reasoning, tools, structured output and streaming."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def create(self, req: ChatCompletionRequest, principal: Principal) -> Response:
        """Answer one request: forwarded upstream, streamed, or whole."""
        entry = self.state.entry(req.model)
        self.state.gateway.authorize_model(principal, entry.id)
        self.state.drain.check_open()
        if entry.is_upstream:  # the upstream applies its own limits
            return await forward(self.state, principal, entry, req, "chat/completions")
        prep = prepare_chat(self.state, req, entry)
        meter = self.state.gateway.meter(principal, entry, prompt_tokens=len(prep.prompt_ids),
                                         max_tokens=int(prep.params.max_tokens or 0) * prep.n,
                                         generation_id=new_id("chatcmpl"), streamed=req.stream,
                                         endpoint="/v1/chat/completions")
        if not req.stream:
            return await self._whole(req, prep, meter)
        await meter.admit()  # a 402 / 429 is the response's status, before the stream starts
        return SSEResponse(with_keepalive(self._stream(req, prep, meter), self.state.settings.keepalive_s),
                           headers=meter.headers, on_close=meter.close)

    async def _whole(self, req: ChatCompletionRequest, prep: PreparedChat, meter: Meter) -> Response:
        created = int(time.time())
        choices = Choices(prep, meter)
        async with metered_run(self.state, meter, prep.prompt_ids, prep.params) as run:
            try:
                async for _ in drive(run, choices):
                    pass
            finally:
                # A client that leaves cancels the run (api/disconnect.py): its choices still count their
                # reasoning, and the meter settles as cancelled.
                choices.finish_all("abort")
        exclude = prep.thinking.exclude
        body = ChatCompletionResponse(
            id=meter.generation_id, created=created, model=meter.entry.id, usage=usage_body(meter),
            choices=[ChatChoice(index=i, message=_message(f, exclude), logprobs=_logprobs(f.logprobs),
                                finish_reason=f.finish_reason, native_finish_reason=f.native_finish_reason)
                     for i, f in enumerate(choices.finals) if f is not None])
        return Response(body.model_dump_json(), media_type="application/json", headers=meter.headers)

    async def _stream(self, req: ChatCompletionRequest, prep: PreparedChat, meter: Meter) -> AsyncIterator[bytes]:
        chunks = _Chunks(meter.generation_id, int(time.time()), meter.entry.id, prep.thinking.exclude,
                         bool(req.logprobs))
        choices = Choices(prep, meter)
        try:
            yield chunks.roles(prep.n)
            async with metered_run(self.state, meter, prep.prompt_ids, prep.params) as run:
                try:
                    async for ev in drive(run, choices):
                        for chunk in chunks.event(ev):
                            yield chunk
                finally:
                    choices.finish_all("abort")
        except Exception as exc:  # noqa: BLE001 - the status line is sent: the error goes in the stream
            yield sse_error(stream_error(exc))
            yield DONE  # the stream is over: clients that wait for [DONE] stop waiting
            return
        if req.stream_options and req.stream_options.include_usage:
            yield chunks.chunk([], usage_body(meter))
        yield DONE

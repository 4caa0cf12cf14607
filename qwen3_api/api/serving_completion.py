"""POST /v1/completions as one service: a raw prompt (no chat template), the same sampling, legacy logprobs.

One loop (``_drive``) runs under the request's meter and serves both the streamed chunks and the whole body.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi.responses import Response

from qwen3_api.api.engine_run import EngineRun, metered_run, new_id
from qwen3_api.api.request_params import completion_budget, to_sampling_params
from qwen3_api.api.responses import CompletionChoice, CompletionLogprobs, CompletionResponse, usage_body
from qwen3_api.api.schemas import CompletionRequest
from qwen3_api.api.state import AppState
from qwen3_api.api.streaming import DONE, SSEResponse, sse_error, sse_event, stream_error, with_keepalive
from qwen3_api.api.upstream import forward
from qwen3_api.chat.detokenizer import IncrementalDetokenizer
from qwen3_api.chat.finish import finish_reason
from qwen3_api.chat.stop import StopChecker
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.errors import invalid
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.principal import Principal


@dataclass
class _TextChoice:
    """One choice's text state: UTF-8-safe detokenizing, stop strings, legacy logprobs."""

    tok: ChatTokenizer
    stop: StopChecker
    want_logprobs: int | None
    detok: IncrementalDetokenizer = field(init=False)
    text: list[str] = field(default_factory=list)
    logprobs: CompletionLogprobs = field(default_factory=CompletionLogprobs)
    offset: int = 0
    sent_logprobs: int = 0  # entries already streamed
    finish_reason: str | None = None
    native: str | None = None

    def __post_init__(self) -> None:
        self.detok = IncrementalDetokenizer(self.tok)

    def feed(self, token_ids: list[int], logprobs: list[dict[int, float]] | None) -> tuple[str, int]:
        """New visible text and the number of tokens consumed (tokens after a stop string are not)."""
        out = ""
        used = 0
        for i, tid in enumerate(token_ids):
            if self.stop.done:
                break
            used += 1
            if self.want_logprobs is not None:
                self._logprob(tid, logprobs[i] if logprobs and i < len(logprobs) else {})
            out += self.stop.push(self.detok.feed(tid)).text
        self.text.append(out)
        return out, used

    def _logprob(self, tid: int, lp: dict[int, float]) -> None:
        token = self.tok.bytes_of(tid).decode("utf-8", errors="replace")
        self.logprobs.tokens.append(token)
        self.logprobs.token_logprobs.append(lp.get(tid, math.nan))
        top = sorted(lp.items(), key=lambda kv: kv[1], reverse=True)[: self.want_logprobs]
        self.logprobs.top_logprobs.append(
            {self.tok.bytes_of(t).decode("utf-8", errors="replace"): v for t, v in top})
        self.logprobs.text_offset.append(self.offset)
        self.offset += len(token)

    def new_logprobs(self) -> CompletionLogprobs | None:
        """The entries not streamed yet (None when logprobs were not asked for)."""
        if self.want_logprobs is None:
            return None
        n0, self.sent_logprobs = self.sent_logprobs, len(self.logprobs.tokens)
        lp = self.logprobs
        return CompletionLogprobs(tokens=lp.tokens[n0:], token_logprobs=lp.token_logprobs[n0:],
                                  top_logprobs=lp.top_logprobs[n0:], text_offset=lp.text_offset[n0:])

    def finish(self, engine_reason: str | None) -> str:
        """Flush held text; the finish reason as chat/finish.py decides it."""
        rest = ""
        if not self.stop.done:
            rest = self.stop.push(self.detok.flush()).text
            if not self.stop.done:
                rest += self.stop.flush()
        self.text.append(rest)
        self.native = engine_reason
        self.finish_reason = finish_reason(engine_reason, stop_matched=self.stop.matched is not None)
        return rest


@dataclass(slots=True)
class _TextEvent:
    index: int
    text: str
    finished: bool


def _prompt_ids(req: CompletionRequest, tok: ChatTokenizer) -> list[int]:
    prompt = req.prompt
    if not prompt:  # the schema refuses it too: no route to an IndexError below
        raise invalid("prompt must not be empty", "prompt")
    if isinstance(prompt, list) and isinstance(prompt[0], int):
        bad = [t for t in prompt if not 0 <= t < tok.model_vocab_size]
        if bad:
            raise invalid(f"prompt token id {bad[0]} is outside the vocabulary", "prompt")
        return list(prompt)  # type: ignore[arg-type]
    text = prompt if isinstance(prompt, str) else prompt[0]
    ids = tok.encode(text)  # type: ignore[arg-type]
    if not ids:
        raise invalid("prompt must not be empty", "prompt")
    return ids


async def _drive(run: EngineRun, choices: list[_TextChoice], meter: Meter) -> AsyncIterator[_TextEvent]:
    """The one loop of a completion request: engine outputs -> each choice's text -> events."""
    used = [0] * len(choices)
    open_choices = set(range(len(choices)))
    async for out in run.outputs():
        for o in out.outputs:
            if o.index not in open_choices:
                continue
            c = choices[o.index]
            text, n = c.feed(o.token_ids, o.logprobs)
            used[o.index] += n
            meter.usage.completion_tokens = sum(used)
            finished = c.stop.done or o.finish_reason is not None
            if finished:
                text += c.finish(o.finish_reason if not c.stop.done else "stop")
                open_choices.discard(o.index)
            yield _TextEvent(o.index, text, finished)
        if not open_choices:
            break
    await run.abort()  # choices ended by stop strings leave the engine request running
    for i in sorted(open_choices):  # the engine ended without a reason for this choice
        yield _TextEvent(i, choices[i].finish(None), True)


class CompletionService:
    """Legacy text completions: a raw prompt, streamed as ``text_completion`` chunks or whole."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def create(self, req: CompletionRequest, principal: Principal) -> Response:
        """Answer one request: forwarded upstream, streamed, or whole."""
        state = self.state
        entry = state.entry(req.model)
        state.gateway.authorize_model(principal, entry.id)
        self.state.drain.check_open()
        if entry.is_upstream:  # the upstream applies its own limits
            return await forward(state, principal, entry, req, "completions")
        if req.n > state.settings.max_n:
            raise invalid(f"n must be at most {state.settings.max_n} on this server", "n")
        tok = state.chat_tokenizer()
        prompt_ids = _prompt_ids(req, tok)
        max_tokens = completion_budget(req, req.limit(), len(prompt_ids), state.max_model_len, "prompt")
        params = to_sampling_params(req, max_tokens=max_tokens, vocab_size=tok.model_vocab_size,
                                    defaults=entry.default_parameters, logprobs=req.logprobs)
        meter = state.gateway.meter(principal, entry, prompt_tokens=len(prompt_ids), max_tokens=max_tokens * req.n,
                                    generation_id=new_id("cmpl"), streamed=req.stream, endpoint="/v1/completions")
        choices = [_TextChoice(tok, StopChecker(req.stop_list()), req.logprobs) for _ in range(req.n)]
        echo = tok.decode(prompt_ids) if req.echo else ""
        if not req.stream:
            return await self._whole(req, meter, prompt_ids, params, choices, echo)
        await meter.admit()  # a 402 / 429 is the response's status, before the stream starts
        events = self._stream(req, meter, prompt_ids, params, choices, echo)
        return SSEResponse(with_keepalive(events, state.settings.keepalive_s), headers=meter.headers,
                           on_close=meter.close)

    async def _whole(self, req: CompletionRequest, meter: Meter, prompt_ids: list[int], params: SamplingParams,
                     choices: list[_TextChoice], echo: str) -> Response:
        created = int(time.time())
        async with metered_run(self.state, meter, prompt_ids, params) as run:
            async for _ in _drive(run, choices, meter):
                pass
        body = CompletionResponse(id=meter.generation_id, created=created, model=meter.entry.id,
                                  usage=usage_body(meter), choices=[
            CompletionChoice(index=i, text=echo + "".join(c.text), finish_reason=c.finish_reason,
                             native_finish_reason=c.native,
                             logprobs=c.logprobs if req.logprobs is not None else None)
            for i, c in enumerate(choices)])  # fmt: skip
        return Response(body.model_dump_json(), media_type="application/json", headers=meter.headers)

    async def _stream(self, req: CompletionRequest, meter: Meter, prompt_ids: list[int], params: SamplingParams,
                      choices: list[_TextChoice], echo: str) -> AsyncIterator[bytes]:
        created, model = int(time.time()), meter.entry.id

        def chunk(i: int, text: str, finish: str | None = None, lp: CompletionLogprobs | None = None) -> bytes:
            return sse_event(CompletionResponse(id=meter.generation_id, created=created, model=model, choices=[
                CompletionChoice(index=i, text=text, logprobs=lp, finish_reason=finish)]))

        try:
            for i in range(req.n if echo else 0):
                yield chunk(i, echo)
            async with metered_run(self.state, meter, prompt_ids, params) as run:
                async for ev in _drive(run, choices, meter):
                    c = choices[ev.index]
                    if ev.text or ev.finished:
                        yield chunk(ev.index, ev.text, c.finish_reason if ev.finished else None, c.new_logprobs())
        except Exception as exc:  # noqa: BLE001 - the headers are gone: the error goes in the stream
            yield sse_error(stream_error(exc))
            yield DONE  # the stream is over: clients that wait for [DONE] stop waiting
            return
        if req.stream_options and req.stream_options.include_usage:
            yield sse_event(CompletionResponse(id=meter.generation_id, created=created, model=model, choices=[],
                                               usage=usage_body(meter)))
        yield DONE

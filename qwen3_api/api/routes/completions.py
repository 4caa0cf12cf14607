"""POST /v1/completions: legacy text completion. A raw prompt (no chat template), the same sampling."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from qwen3_api.api.deps import authenticate, route_model
from qwen3_api.api.generation import Generation, new_id
from qwen3_api.api.responses import CompletionChoice, CompletionLogprobs, CompletionResponse
from qwen3_api.api.sampling import completion_budget, to_sampling_params
from qwen3_api.api.schemas import CompletionRequest
from qwen3_api.api.state import AppState, get_state
from qwen3_api.api.streaming import DONE, SSEResponse, sse_error, sse_event, stream_error, with_keepalive
from qwen3_api.api.usage import usage_body
from qwen3_api.chat.detokenizer import IncrementalDetokenizer
from qwen3_api.chat.stop import StopChecker
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.errors import invalid

router = APIRouter(tags=["completions"])


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

    def finish(self, engine_reason: str | None) -> str:
        """Flush held text; the finish reason is "stop" on a stop string, else the engine's."""
        rest = ""
        if not self.stop.done:
            rest = self.stop.push(self.detok.flush()).text
            if not self.stop.done:
                rest += self.stop.flush()
        self.text.append(rest)
        self.native = engine_reason
        self.finish_reason = "stop" if self.stop.matched or engine_reason in (None, "abort") else engine_reason
        return rest


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


@router.post("/v1/completions", response_model=CompletionResponse,
             responses={400: {"description": "invalid parameters"}, 404: {"description": "unknown model"}})
async def create_completion(req: CompletionRequest, state: AppState = Depends(get_state),
                            principal: Any = Depends(authenticate)) -> Response:
    """Complete a raw prompt. Streaming sends ``text_completion`` chunks, then ``[DONE]``."""
    entry = await route_model(state, principal, req, "/completions")
    if isinstance(entry, Response):
        return entry
    tok = state.chat_tokenizer()
    prompt_ids = _prompt_ids(req, tok)
    max_tokens = completion_budget(req, req.limit(), len(prompt_ids), state.max_model_len, "prompt")
    params = to_sampling_params(req, max_tokens=max_tokens, vocab_size=tok.model_vocab_size,
                                defaults=entry.default_parameters, logprobs=req.logprobs)
    rid = new_id("cmpl")
    created = int(time.time())
    echo = tok.decode(prompt_ids) if req.echo else ""
    choices = [_TextChoice(tok, StopChecker(req.stop_list()), req.logprobs) for _ in range(req.n)]
    gen = Generation(state, principal, entry, rid, prompt_ids, params, req.stream)

    def chunk(i: int, text: str, finish: str | None = None, lp: CompletionLogprobs | None = None) -> bytes:
        return sse_event(CompletionResponse(id=rid, created=created, model=entry.id, choices=[
            CompletionChoice(index=i, text=text, logprobs=lp, finish_reason=finish)]))

    async def run(emit: bool) -> AsyncIterator[bytes]:
        open_choices = set(range(req.n))
        sent_lp = [0] * req.n
        async for out in gen.stream():
            for o in out.outputs:
                c = choices[o.index]
                if o.index not in open_choices:
                    continue
                text, used = c.feed(o.token_ids, o.logprobs)
                gen.completion_tokens[o.index] += used
                if c.stop.done or o.finish_reason is not None:
                    text += c.finish(o.finish_reason if not c.stop.done else "stop")
                    open_choices.discard(o.index)
                if emit and (text or c.finish_reason):
                    lp = None
                    if req.logprobs is not None:
                        n0, sent_lp[o.index] = sent_lp[o.index], len(c.logprobs.tokens)
                        lp = CompletionLogprobs(tokens=c.logprobs.tokens[n0:],
                                                token_logprobs=c.logprobs.token_logprobs[n0:],
                                                top_logprobs=c.logprobs.top_logprobs[n0:],
                                                text_offset=c.logprobs.text_offset[n0:])
                    yield chunk(o.index, text, c.finish_reason, lp)
            if not open_choices:
                break
        for i in open_choices:  # the engine ended without a reason for this choice
            rest = choices[i].finish(None)
            if emit:
                yield chunk(i, rest, choices[i].finish_reason)

    if not req.stream:
        async with gen:
            async for _ in run(emit=False):
                pass
            gen.complete()
            await gen.abort()
            cost = await gen.settle("completed")
        body = CompletionResponse(id=rid, created=created, model=entry.id, usage=usage_body(gen, cost), choices=[
            CompletionChoice(index=i, text=echo + "".join(c.text), finish_reason=c.finish_reason,
                             native_finish_reason=c.native,
                             logprobs=c.logprobs if req.logprobs is not None else None)
            for i, c in enumerate(choices)])
        return Response(body.model_dump_json(), media_type="application/json", headers=gen.headers())

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    await gen.__aenter__()

    async def events() -> AsyncIterator[bytes]:
        try:
            if echo:
                for i in range(req.n):
                    yield chunk(i, echo)
            async for ev in run(emit=True):
                yield ev
            gen.complete()
            await gen.abort()
            cost = await gen.settle("completed")
            if include_usage:
                yield sse_event(CompletionResponse(id=rid, created=created, model=entry.id, choices=[],
                                                   usage=usage_body(gen, cost)))
            yield DONE
        except Exception as exc:  # noqa: BLE001 - the headers are gone: the error goes in the stream
            gen.fail(exc)
            yield sse_error(stream_error(exc))
            yield DONE  # the stream is over: clients that wait for [DONE] stop waiting
        finally:
            await gen.close()

    return SSEResponse(with_keepalive(events(), state.settings.keepalive_s), headers=gen.headers(),
                       on_close=gen.close)

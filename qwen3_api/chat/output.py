"""Per-choice output processing: generated token ids -> reasoning, content, tool calls, logprobs.

Interface (what the API builds on; one ``ChoiceProcessor`` per choice, never shared between choices)::

    tok = ChatTokenizer.from_dir(model_dir)                 # once per server
    proc = ChoiceProcessor(
        tok,
        prompt_ids=prompt_ids,        # decides the thinking state: prompt ending in </think>\\n\\n = thinking off
        stop=["\\n\\n"] | "END" | None, # stop strings: matched in content text only (not reasoning, not tool JSON)
        parse_tool_calls=bool(tools) and tool_choice != "none",
        logprobs=True, top_logprobs=5,
    )
    for out in engine outputs:                               # delta mode: only the new tokens each time
        d = proc.feed(out.token_ids, out.logprobs)           # -> ChoiceDelta
        d.reasoning / d.content: new text ("" = nothing new); d.tool_calls: [ParsedToolCallDelta] (.to_openai());
        d.logprobs: [OpenAI logprobs.content entries] for content tokens released now;
        if d.stop_matched: abort the engine request (the stop string was found; nothing after it is shown)
    final = proc.finish(engine_finish_reason)                # -> FinalChoice
        final.delta: text still held back at the end (send it in streaming before the finish chunk)
        final.content (None when empty), final.reasoning (None when empty), final.tool_calls ([dict] or None),
        final.finish_reason (OpenAI's: "stop" | "length" | "tool_calls", decided in chat/finish.py),
        final.native_finish_reason (the engine's own), final.stop (matched stop string or None),
        final.logprobs (content tokens only, one entry each; None when not asked), final.reasoning_tokens

Concatenating every ``ChoiceDelta`` (and ``final.delta``) gives exactly the final fields: the non-streaming response is
the same computation fed all at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from qwen3_api.chat.detokenizer import IncrementalDetokenizer
from qwen3_api.chat.finish import finish_reason
from qwen3_api.chat.reasoning import EdgeTrimmer, ReasoningSplitter, ThinkState, initial_think_state
from qwen3_api.chat.stop import StopChecker
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.chat.tool_calls import ParsedToolCallDelta, ToolCallParser

_TAIL_WS = " \n"


@dataclass(slots=True)
class ChoiceDelta:
    """What one ``feed`` makes visible."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ParsedToolCallDelta] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    stop_matched: str | None = None

    @property
    def empty(self) -> bool:
        """Nothing to send."""
        return not (self.reasoning or self.content or self.tool_calls or self.logprobs)


@dataclass(slots=True)
class FinalChoice:
    """The finished choice: message fields, reasons, logprobs, counts."""

    delta: ChoiceDelta
    content: str | None
    reasoning: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    native_finish_reason: str | None
    stop: str | None
    logprobs: list[dict[str, Any]] | None
    reasoning_tokens: int
    completion_tokens: int

    def message(self) -> dict[str, Any]:
        """The response ``message`` object (reasoning under both names the clients read)."""
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": self.content,
            "refusal": None,
            "reasoning": self.reasoning,
            "reasoning_content": self.reasoning,
        }
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        return msg


@dataclass(slots=True)
class _PendingLogprob:
    start: int  # offset of the token's text in the content stream before stop-string matching
    entry: dict[str, Any]


class ChoiceProcessor:
    """One choice's parser state: think split, detokenizer, stop strings, tool calls, logprobs."""

    def __init__(
        self,
        tok: ChatTokenizer,
        *,
        prompt_ids: list[int] | None = None,
        think_state: ThinkState | None = None,
        stop: str | list[str] | None = None,
        parse_tool_calls: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> None:
        self._tok = tok
        if think_state is None:
            think_state = initial_think_state(prompt_ids or [], tok)
        self._split = ReasoningSplitter(tok, think_state)
        self._detok = IncrementalDetokenizer(tok)
        self._reason_trim = EdgeTrimmer("\n")
        self._stop = StopChecker(stop)
        self._tools = ToolCallParser() if parse_tool_calls and tok.tool_call_start_id is not None else None
        self._want_logprobs = logprobs
        self._top = top_logprobs
        self._content_started = False
        self._tail = ""  # trailing whitespace of the content, held in case a tool call follows
        self._stop_in = 0  # characters pushed into the stop checker
        self._pending: list[_PendingLogprob] = []
        self._segment = "answer" if think_state is ThinkState.ANSWER else "reasoning"
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self._logprobs: list[dict[str, Any]] = []
        self._num_tokens = 0

    # ---- feeding -------------------------------------------------------------------------------------------

    def feed(self, token_ids: list[int], logprobs: list[dict[int, float]] | None = None) -> ChoiceDelta:
        """Process newly generated tokens (with their logprob dicts when asked for) and return what is new."""
        d = ChoiceDelta()
        for i, tid in enumerate(token_ids):
            if self._stop.done:
                break
            self._num_tokens += 1
            lp = logprobs[i] if logprobs is not None and i < len(logprobs) else None
            self._feed_one(tid, lp, d)
        self._collect(d)
        return d

    def _feed_one(self, tid: int, lp: dict[int, float] | None, d: ChoiceDelta) -> None:
        route = self._split.route(tid)
        if route == "tag":
            rest = self._detok.flush()
            if self._segment == "reasoning":
                d.reasoning += self._reason_trim.push(rest)
                if self._split.state is ThinkState.ANSWER:
                    self._reason_trim.drop()
                    self._segment = "answer"
            elif self._tools is not None and self._tools.in_block:
                d.tool_calls += self._tools.push(rest)
            else:
                self._content_text(rest, d, None)
            return
        if route == "reasoning":
            d.reasoning += self._reason_trim.push(self._detok.feed(tid))
            return
        if self._segment == "reasoning":  # the model answered without opening a thought
            self._segment = "answer"
        tools = self._tools
        if tools is not None and tid == self._tok.tool_call_start_id and not tools.in_block:
            self._content_text(self._detok.flush(), d, None)
            self._drop_tail()
            tools.open()
            return
        if tools is not None and tools.in_block:
            if tid == self._tok.tool_call_end_id:
                d.tool_calls += tools.push(self._detok.flush())
                self._close_block(d)
            else:
                d.tool_calls += tools.push(self._detok.feed(tid))
            return
        self._content_text(self._detok.feed(tid), d, self._entry(tid, lp))

    def _close_block(self, d: ChoiceDelta, terminated: bool = True) -> None:
        assert self._tools is not None
        deltas, fallback = self._tools.close(terminated)
        d.tool_calls += deltas
        if fallback is not None:
            self._content_text("<tool_call>" + fallback + "</tool_call>", d, None)

    def _content_text(self, text: str, d: ChoiceDelta, entry: dict[str, Any] | None) -> None:
        if not self._content_started:
            text = text.lstrip("\n")  # the "\n\n" the model writes after </think>
            if not text:
                return
            self._content_started = True
        if entry is not None:
            self._pending.append(_PendingLogprob(self._stop_in, entry))
        self._stop_in += len(text)
        res = self._stop.push(text)
        self._emit_content(res.text, d)
        if res.matched is not None:
            d.stop_matched = res.matched
            self._pending = [p for p in self._pending if p.start < self._stop.released_len]

    def _emit_content(self, text: str, d: ChoiceDelta) -> None:
        if not text:
            return
        buf = self._tail + text
        body = buf.rstrip(_TAIL_WS)
        self._tail = buf[len(body) :]
        d.content += body

    def _drop_tail(self) -> None:
        # Whitespace between the text and a tool call (or between calls) is layout, not content.
        if self._tail:
            cut_from = self._stop.released_len - len(self._tail)
            self._pending = [p for p in self._pending if p.start < cut_from]
            self._tail = ""

    def _entry(self, tid: int, lp: dict[int, float] | None) -> dict[str, Any] | None:
        if not self._want_logprobs or tid in self._tok.special_ids:
            return None
        lp = lp or {}
        chosen = lp.get(tid, math.nan)
        top = sorted(lp.items(), key=lambda kv: kv[1], reverse=True)[: self._top]
        return {
            **self._token_info(tid, chosen),
            "top_logprobs": [self._token_info(t, v) for t, v in top],
        }

    def _token_info(self, tid: int, logprob: float) -> dict[str, Any]:
        raw = self._tok.bytes_of(tid)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    def _collect(self, d: ChoiceDelta, final: bool = False) -> None:
        # Release logprob entries whose text has reached the client (or all of them at the end).
        limit = self._stop.released_len - len(self._tail)
        keep: list[_PendingLogprob] = []
        for p in self._pending:
            if final or p.start < limit:
                d.logprobs.append(p.entry)
            else:
                keep.append(p)
        self._pending = keep
        self._reasoning.append(d.reasoning)
        self._content.append(d.content)
        self._logprobs += d.logprobs

    # ---- the end -------------------------------------------------------------------------------------------

    def finish(self, engine_finish_reason: str | None) -> FinalChoice:
        """Flush what was held back and build the final choice."""
        d = ChoiceDelta()
        if not self._stop.done:
            rest = self._detok.flush()
            if self._tools is not None and self._tools.in_block:
                d.tool_calls += self._tools.push(rest)
                self._close_block(d, terminated=False)
            elif self._segment == "reasoning" and self._split.state is not ThinkState.ANSWER:
                d.reasoning += self._reason_trim.push(rest)
            else:
                self._content_text(rest, d, None)
            self._reason_trim.drop()  # cut mid-thought: trailing newlines are not reasoning
            if not self._stop.done:
                self._emit_content(self._stop.flush(), d)
        calls = self._tools.calls if self._tools is not None else []
        if calls:
            self._drop_tail()
        else:
            d.content += self._tail
            self._tail = ""
        self._collect(d, final=True)
        content = "".join(self._content) or None
        reasoning = "".join(self._reasoning) or None
        reason = finish_reason(engine_finish_reason, stop_matched=self._stop.matched is not None,
                               tool_calls=bool(calls))
        return FinalChoice(
            delta=d,
            content=content,
            reasoning=reasoning,
            tool_calls=[c.to_openai() for c in calls] or None,
            finish_reason=reason,
            native_finish_reason=engine_finish_reason,
            stop=self._stop.matched,
            logprobs=self._logprobs if self._want_logprobs else None,
            reasoning_tokens=self._split.thought_tokens if reasoning else 0,
            completion_tokens=self._num_tokens,
        )

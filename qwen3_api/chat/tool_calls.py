"""``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks -> OpenAI tool_calls, streamed.

The block boundaries are the ``<tool_call>``/``</tool_call>`` token ids (the caller routes tokens; only answer
tokens ever reach this parser, so a call written inside the reasoning stays reasoning). Inside a block the parser
streams: the call's id and name go out once the ``{"name": "...", "arguments": `` prefix is complete, then the
argument text as it arrives, holding back a trailing run of ``}``/whitespace that may be the end of the outer
object. The final arguments are exactly the concatenation of the streamed pieces, so a client that joins the
deltas gets the same string as the non-streaming response.

Malformed blocks: if the name prefix never parses, the whole block goes back to the caller as content text
(a block cut off by max_tokens before its name is dropped instead). Once a
name is out the call cannot be taken back; its arguments are then whatever the model wrote (as in vLLM). With
``tool_choice`` required/named or strict tools the grammar makes the block valid JSON anyway.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

_PREFIX = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TAIL = re.compile(r"[\s}]*\Z")


def new_call_id() -> str:
    """An OpenAI-style tool call id: "call_" and 24 random hex digits."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(slots=True)
class ParsedToolCallDelta:
    """One streamed piece of a call: id and name on the first piece only, then argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict[str, Any]:
        """The chunk shape: ``{"index", "id"?, "type"?, "function": {"name"?, "arguments"}}``."""
        fn: dict[str, Any] = {"arguments": self.arguments}
        out: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            out["id"] = self.id
            out["type"] = "function"
            fn = {"name": self.name, "arguments": self.arguments}
        out["function"] = fn
        return out


@dataclass(slots=True)
class ParsedToolCall:
    """A finished call as the response message carries it."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ToolCallParser:
    """State for one choice: the calls so far and the block being read."""

    def __init__(self) -> None:
        self.calls: list[ParsedToolCall] = []
        self.in_block = False
        self._buf = ""
        self._current: ParsedToolCall | None = None
        self._args_start = 0

    def open(self) -> None:
        """The ``<tool_call>`` token arrived."""
        self.in_block = True
        self._buf = ""
        self._current = None

    def push(self, text: str) -> list[ParsedToolCallDelta]:
        """Text inside the block; returns the deltas it makes available."""
        self._buf += text
        out: list[ParsedToolCallDelta] = []
        if self._current is None:
            m = _PREFIX.match(self._buf)
            if m is None or not m.group(1):
                return out
            try:
                name = json.loads('"' + m.group(1) + '"')
            except json.JSONDecodeError:
                return out
            self._current = ParsedToolCall(new_call_id(), name, "")
            self.calls.append(self._current)
            self._args_start = m.end()
            out.append(ParsedToolCallDelta(len(self.calls) - 1, self._current.id, name, ""))
        args = self._buf[self._args_start :]
        if not self._current.arguments:
            # whitespace after "arguments": may arrive in a later token than the colon
            lead = len(args) - len(args.lstrip())
            self._args_start += lead
            args = args[lead:]
        safe = args[: _TAIL.search(args).start()]
        if len(safe) > len(self._current.arguments):
            piece = safe[len(self._current.arguments) :]
            self._current.arguments = safe
            if out:
                out[-1].arguments = piece
            else:
                out.append(ParsedToolCallDelta(len(self.calls) - 1, arguments=piece))
        return out

    def close(self, terminated: bool = True) -> tuple[list[ParsedToolCallDelta], str | None]:
        """The ``</tool_call>`` token (``terminated``) or the end of output arrived.

        Returns the last deltas, and the raw block text when a closed block was not a call (the caller shows it
        as content). A block cut off by the end of output before its name was complete is dropped: it is an
        unfinished call, not text, and finish_reason "length" already says the output was cut.
        """
        self.in_block = False
        if self._current is None:
            parsed = _loads(self._buf)
            if isinstance(parsed, dict) and isinstance(parsed.get("name"), str) and parsed["name"]:
                # A call without "arguments" (or with keys in another order): emit it whole.
                args = parsed.get("arguments", parsed.get("parameters", {}))
                text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
                call = ParsedToolCall(new_call_id(), parsed["name"], text)
                self.calls.append(call)
                return [ParsedToolCallDelta(len(self.calls) - 1, call.id, call.name, text)], None
            return [], self._buf if terminated else None
        body = self._buf.rstrip()
        args = self._buf[self._args_start :].rstrip()
        if body.endswith("}"):
            args = args[:-1].rstrip()
        out: list[ParsedToolCallDelta] = []
        if args.startswith(self._current.arguments) and len(args) > len(self._current.arguments):
            out.append(ParsedToolCallDelta(len(self.calls) - 1, arguments=args[len(self._current.arguments) :]))
            self._current.arguments = args
        self._current = None
        return out, None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None

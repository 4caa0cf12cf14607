"""The one place a choice's OpenAI ``finish_reason`` is decided from how it ended.

The engine ends a sequence with ``stop`` (an end token, a stop token id, a finished grammar), ``length``
(max_tokens or the context) or ``abort`` (the server stopped it: all choices done, a stop string found by the
text layer). OpenAI's enum is stop | length | tool_calls | content_filter; the engine's own reason is kept as
``native_finish_reason`` (OpenRouter's field).
"""

from __future__ import annotations


def finish_reason(engine_reason: str | None, *, stop_matched: bool = False, tool_calls: bool = False) -> str:
    """``stop`` for a matched stop string; else ``length`` when the budget ran out; else ``tool_calls`` when the
    choice called tools; else ``stop`` (an end token, a finished grammar, or the server ending it)."""
    if stop_matched:
        return "stop"
    if engine_reason == "length":
        return "length"
    if tool_calls:
        return "tool_calls"
    return "stop"

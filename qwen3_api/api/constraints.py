"""The request's steering (tool_choice, response_format, thinking budget) -> the chat layer's constraints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qwen3_api.api.schemas import ResponseFormat
from qwen3_api.chat.constraint import constraint_factory
from qwen3_api.chat.reasoning import ThinkState
from qwen3_api.chat.tokens import ChatTokenizer


def build_constraint_factory(tok: ChatTokenizer, *, prompt_ids: list[int], tools: list[dict[str, Any]] | None,
                             tool_choice: str | dict[str, Any], parallel_tool_calls: bool,
                             response_format: ResponseFormat | None, thinking_budget: int | None,
                             max_tokens: int | None = None, think_state: ThinkState | None = None
                             ) -> Callable[[], Any] | None:
    """A factory of fresh TokenConstraints (one per choice), or None when generation is free.

    Compiled once per request (a bad schema is a 400 before any work); applied after ``</think>`` only.
    """
    fmt = response_format.model_dump(by_alias=True, exclude_none=True) if response_format is not None else None
    return constraint_factory(tok, prompt_ids=prompt_ids, response_format=fmt, tools=tools,
                              tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                              thinking_budget=thinking_budget, max_tokens=max_tokens, think_state=think_state)

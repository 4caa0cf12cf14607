"""The request's steering (tool_choice, response_format, thinking budget) -> the chat layer's constraints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qwen3_api.api.schemas import ResponseFormat
from qwen3_api.chat.tokens import ChatTokenizer


def build_constraint_factory(tok: ChatTokenizer, *, prompt_ids: list[int], tools: list[dict[str, Any]] | None,
                             tool_choice: str | dict[str, Any], parallel_tool_calls: bool,
                             response_format: ResponseFormat | None, thinking_budget: int | None
                             ) -> Callable[[], Any] | None:
    """A factory of fresh TokenConstraints (one per choice), or None when generation is free."""
    wants_format = response_format is not None and response_format.type != "text"
    wants_tools = bool(tools) and (tool_choice == "required" or isinstance(tool_choice, dict)
                                   or not parallel_tool_calls)
    if not (wants_format or wants_tools or thinking_budget is not None):
        return None
    raise NotImplementedError("constraints: waiting for the chat layer's structured module")

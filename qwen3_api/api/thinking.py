"""What a chat request asks of the model's thinking: on or off, a budget, and whether the reasoning is returned.

OpenRouter's ``reasoning`` object (effort / max_tokens / exclude / enabled), the top-level ``reasoning_effort``
and ``include_reasoning``, and ``chat_template_kwargs.enable_thinking`` resolved into one decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen3_api.api.schemas import ChatCompletionRequest

# OpenRouter's share of max_tokens that each reasoning effort may spend thinking.
EFFORT_RATIOS: dict[str, float] = {"max": 0.95, "xhigh": 0.95, "high": 0.8, "medium": 0.5, "low": 0.2,
                                   "minimal": 0.1}


@dataclass(slots=True)
class ThinkingOptions:
    """What the request asks of the model's thinking mode."""

    enabled: bool = True          # rendered through the template's enable_thinking
    budget: int | None = None     # reasoning tokens before the server closes the thought itself
    exclude: bool = False         # think, but do not return the reasoning


def thinking_enabled(req: ChatCompletionRequest) -> bool:
    """Off with ``chat_template_kwargs.enable_thinking=false``, ``reasoning.enabled=false`` or effort ``none``
    (known before the prompt is rendered; the budget needs the prompt's length)."""
    r = req.reasoning
    effort = (r.effort if r is not None else None) or req.reasoning_effort
    enabled = bool((req.chat_template_kwargs or {}).get("enable_thinking", True))
    return enabled and not (r is not None and r.enabled is False) and effort != "none"


def thinking_options(req: ChatCompletionRequest, max_tokens: int) -> ThinkingOptions:
    """The whole decision; the budget is ``reasoning.max_tokens`` or ``effort``'s share of ``max_tokens``."""
    r = req.reasoning
    effort = (r.effort if r is not None else None) or req.reasoning_effort
    enabled = thinking_enabled(req)
    budget: int | None = None
    if enabled:
        if r is not None and r.max_tokens is not None:
            budget = r.max_tokens
        elif effort is not None:
            budget = max(1, int(max_tokens * EFFORT_RATIOS[effort]))
    exclude = bool((r is not None and r.exclude) or req.include_reasoning is False)
    return ThinkingOptions(enabled=enabled, budget=budget, exclude=exclude)

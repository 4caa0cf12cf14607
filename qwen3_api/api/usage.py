"""The response's ``usage`` object from a generation's counts and its settled cost."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from qwen3_api.api.responses import CompletionTokensDetails, PromptTokensDetails, Usage

if TYPE_CHECKING:
    from qwen3_api.api.generation import Generation


def usage_body(gen: Generation, cost: Decimal | None) -> Usage:
    """OpenAI's usage plus OpenRouter's ``cost`` (a number in the catalog's currency)."""
    u = gen.usage()
    return Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                 total_tokens=u.prompt_tokens + u.completion_tokens,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
                 completion_tokens_details=CompletionTokensDetails(reasoning_tokens=u.reasoning_tokens),
                 cost=float(cost) if cost is not None else None)

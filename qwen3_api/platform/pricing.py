"""What a generation used and what it costs: exact ``Decimal`` arithmetic against the catalog's prices."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from qwen3_api.platform.catalog import CatalogEntry


@dataclass(slots=True)
class Usage:
    """Token counts of one generation (OpenAI's usage; reasoning tokens are part of completion tokens)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict | None) -> Usage:
        """Read an OpenAI ``usage`` object (as an upstream server returns it); missing parts count zero."""
        usage = usage or {}
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(prompt_details.get("cached_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        )


def price(entry: CatalogEntry, usage: Usage) -> Decimal:
    """The exact cost of ``usage`` at ``entry``'s prices, in ``entry.currency``."""
    return entry.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


def reservation(entry: CatalogEntry, prompt_tokens: int, max_tokens: int) -> Decimal:
    """The most a request may cost, held against the key's credit before it runs."""
    return entry.max_cost(prompt_tokens, max_tokens)


def format_money(amount: Decimal | None, currency: str = "") -> str:
    """A human form for tables: plain notation (no exponent), the currency after it."""
    if amount is None:
        return "unlimited"
    text = format(amount.normalize(), "f") if amount else "0"
    return f"{text} {currency}".strip()

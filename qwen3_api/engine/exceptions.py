"""Typed engine errors: the API maps them to OpenAI error codes."""

from __future__ import annotations


class PromptTooLongError(ValueError):
    """The prompt does not fit the model's context or the whole KV cache (API: context_length_exceeded)."""

    def __init__(self, num_tokens: int, limit: int, what: str) -> None:
        super().__init__(
            f"the prompt has {num_tokens} tokens, but {what} allows at most {limit - 1} prompt tokens "
            f"(one position must stay free for the first generated token)"
        )
        self.num_tokens = num_tokens
        self.limit = limit


class EngineError(RuntimeError):
    """The engine failed while running a request; the cause is chained."""

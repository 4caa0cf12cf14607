"""Every per-request sampling parameter, validated once at the door."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwen3_api.engine.constraint import TokenConstraint

MAX_LOGPROBS = 20


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {bounds}, got {value}")


@dataclass
class SamplingParams:
    """How to pick each next token of one request (OpenAI / OpenRouter semantics).

    temperature 0 means greedy. ``logprobs`` (None = off, k = chosen token + top k, k <= 20) reports the
    log-probabilities of the *raw* model distribution (log_softmax of the unprocessed logits over the
    tokenizer's vocabulary), before logit_bias, penalties, temperature and the top-k/p/min-p/top-a
    filters, as vLLM does by default. ``constraint_factory`` gives each sample (n > 1) a fresh
    :class:`~qwen3_api.engine.constraint.TokenConstraint`.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    top_a: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    constraint_factory: Callable[[], TokenConstraint] | None = None

    def __post_init__(self) -> None:
        _check_int("n", self.n, 1, 128)
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_range("top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0.0:
            raise ValueError("top_p must be in (0, 1], got 0")
        _check_int("top_k", self.top_k, 0)
        _check_range("min_p", self.min_p, 0.0, 1.0)
        _check_range("top_a", self.top_a, 0.0, 1.0)
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_range("repetition_penalty", self.repetition_penalty, 0.0, 2.0)
        if self.repetition_penalty == 0.0:
            raise ValueError("repetition_penalty must be in (0, 2], got 0")
        if self.logit_bias is not None:
            bias: dict[int, float] = {}
            for key, value in self.logit_bias.items():
                try:
                    token = int(key)  # JSON object keys arrive as strings
                except (TypeError, ValueError):
                    raise ValueError(f"logit_bias keys must be token ids, got {key!r}") from None
                if token < 0:
                    raise ValueError(f"logit_bias keys must be token ids >= 0, got {token}")
                _check_range(f"logit_bias[{token}]", value, -100.0, 100.0)
                bias[token] = float(value)
            self.logit_bias = bias or None
        if self.seed is not None:
            _check_int("seed", self.seed, -(2**63), 2**64 - 1)
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens, 1)
        _check_int("min_tokens", self.min_tokens, 0)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must be <= max_tokens ({self.max_tokens})")
        self.stop_token_ids = list(self.stop_token_ids or [])
        for token in self.stop_token_ids:
            _check_int("stop_token_ids[]", token, 0)
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, 0, MAX_LOGPROBS)

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0)."""
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        """True when any of the repetition / frequency / presence penalties changes the logits."""
        return (
            self.frequency_penalty != 0.0 or self.presence_penalty != 0.0 or self.repetition_penalty != 1.0
        )

    @property
    def has_filters(self) -> bool:
        """True when top-k / top-p / min-p / top-a can remove tokens before sampling."""
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0 or self.top_a > 0.0

"""What the engine hands back for each request."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FinishReason(StrEnum):
    """Why a sample ended. A StrEnum: it compares equal to (and serializes as) the plain string, so code
    above the engine that compares with "stop" / "length" / "abort" keeps working."""

    STOP = "stop"  # an eos token, a stop token id, or a finished grammar
    LENGTH = "length"  # max_tokens, or the context / KV cache is full
    ABORT = "abort"  # aborted by the caller (or its request failed)


@dataclass
class CompletionOutput:
    """One sample of a request.

    In a stream (delta mode) ``token_ids`` and ``logprobs`` hold only the tokens new since the previous
    output; ``num_tokens`` is always the cumulative number of generated tokens.
    """

    index: int
    token_ids: list[int]
    text: str = ""
    logprobs: list[dict[int, float]] | None = None
    finish_reason: FinishReason | None = None  # None while running
    stop_reason: int | None = None  # the stop token id that ended the sample (None for eos / length)
    num_tokens: int = 0

    @property
    def finished(self) -> bool:
        """True once the sample has a finish reason."""
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """All samples of one request; ``finished`` once every sample is."""

    request_id: str
    prompt_token_ids: list[int]
    num_cached_tokens: int
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False


@dataclass(slots=True)
class EngineStats:
    """A snapshot of the engine's load, for /metrics and admission decisions."""

    running: int
    waiting: int
    kv_usage: float  # blocks held by live sequences / all blocks, 0..1
    prefix_cache_hit_rate: float  # cached prompt tokens / prompt tokens looked up, 0..1
    num_blocks: int
    block_size: int
    num_preemptions: int

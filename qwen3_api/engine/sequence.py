"""One sample's tokens, KV blocks and status: what the scheduler, block manager and sampler share."""

from __future__ import annotations

import random
from enum import Enum, auto
from itertools import count
from typing import TYPE_CHECKING

from qwen3_api.engine.outputs import FinishReason
from qwen3_api.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from qwen3_api.engine.constraint import TokenConstraint


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


_seq_ids = count()


class Sequence:
    """A prompt plus the tokens generated so far for one sample (``index``) of a request.

    ``num_computed_tokens`` tokens have their KV in ``block_table`` (how many more the current step computes
    is the scheduler's ScheduledBatch's to say). A preempted sequence loses its blocks and recomputes prompt +
    output.
    """

    __slots__ = (
        "seq_id", "request_id", "index", "status", "params", "token_ids", "num_prompt_tokens",
        "num_computed_tokens", "num_cached_tokens", "block_table",
        "block_hashes", "output_logprobs", "finish_reason", "stop_reason", "constraint", "rng",
        "pending_forks", "output_counts", "prompt_ids_tensor", "arrival",
    )

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        index: int = 0,
    ) -> None:
        self.seq_id = next(_seq_ids)
        self.arrival = self.seq_id
        self.request_id = request_id
        self.index = index
        self.status = SequenceStatus.WAITING
        self.params = params
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens found in the prefix cache at (first) admission
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # chained hashes of this sequence's full, committed blocks
        self.output_logprobs: list[dict[int, float]] | None = [] if params.logprobs is not None else None
        self.finish_reason: FinishReason | None = None
        self.stop_reason: int | None = None
        self.constraint: TokenConstraint | None = (
            params.constraint_factory() if params.constraint_factory is not None else None
        )
        self.rng = make_rng(params.seed, index)
        self.pending_forks = params.n - 1 if index == 0 else 0
        # {token: count} of generated tokens, kept only when frequency/presence penalties need it
        self.output_counts: dict[int, int] | None = None
        if params.has_penalties:
            self.output_counts = {}
        self.prompt_ids_tensor = None  # unique prompt ids, built once by the sampler for repetition_penalty

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    def append_token(self, token_id: int) -> None:
        """Add a sampled token (its KV is computed by the next step)."""
        self.token_ids.append(token_id)
        if self.output_counts is not None:
            self.output_counts[token_id] = self.output_counts.get(token_id, 0) + 1

    def fork(self, index: int) -> Sequence:
        """A new sample of the same request over the same prompt, owning no blocks yet (n > 1)."""
        child = Sequence(self.request_id, self.token_ids[: self.num_prompt_tokens], self.params, index)
        child.arrival = self.arrival
        return child

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, req={self.request_id!r}, idx={self.index}, {self.status.name}, "
            f"len={len(self)}, computed={self.num_computed_tokens}, blocks={len(self.block_table)})"
        )


def make_rng(seed: int | None, index: int) -> random.Random | None:
    """The per-sample generator of a seeded request (None = use the engine's shared one).

    One uniform per step is all the sampler needs, so a Python ``random.Random`` is enough and costs no
    tensor work; it depends only on (seed, index), never on what else is in the batch.
    """
    if seed is None:
        return None
    return random.Random(seed if index == 0 else f"{seed}:{index}")

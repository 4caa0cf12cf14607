"""One step's sampling inputs, gathered once from the sequences (vLLM's SamplingMetadata)."""

from __future__ import annotations

from dataclasses import dataclass

from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.engine.sequence import Sequence


@dataclass(slots=True)
class SamplingBatch:
    """The rows of one step's logits (one per sequence, in order) and which of them need what.

    ``plain_greedy``: every row takes the argmax of its raw logits (greedy, no logit_bias, penalties,
    constraint, active min_tokens or logprobs), so sampling is one argmax over the batch.
    """

    seqs: list[Sequence]
    params: list[SamplingParams]
    greedy_rows: list[int]
    random_rows: list[int]
    logprob_rows: list[int]  # rows that report logprobs (of the raw distribution)
    min_tokens_rows: list[int]  # rows still short of their min_tokens (their eos / stop ids are masked)
    penalty_rows: list[int]
    plain_greedy: bool

    @classmethod
    def from_sequences(cls, seqs: list[Sequence]) -> SamplingBatch:
        """Select what each row needs, in one pass over the sequences."""
        params = [s.params for s in seqs]
        greedy_rows: list[int] = []
        random_rows: list[int] = []
        logprob_rows: list[int] = []
        min_tokens_rows: list[int] = []
        penalty_rows: list[int] = []
        plain = True
        for i, (seq, p) in enumerate(zip(seqs, params, strict=True)):
            (greedy_rows if p.greedy else random_rows).append(i)
            if p.logprobs is not None:
                logprob_rows.append(i)
            if p.min_tokens > seq.num_output_tokens:
                min_tokens_rows.append(i)
            if p.has_penalties:
                penalty_rows.append(i)
            plain = plain and p.greedy and p.logit_bias is None and seq.constraint is None
        plain = plain and not (logprob_rows or min_tokens_rows or penalty_rows)
        return cls(seqs, params, greedy_rows, random_rows, logprob_rows, min_tokens_rows, penalty_rows, plain)

    def __len__(self) -> int:
        return len(self.seqs)

"""Logits -> next tokens (and logprobs) for a whole batch at once: select -> transform -> draw -> logprobs.

Order of operations, per row: the vocabulary tail beyond the tokenizer is cut off; raw logprobs are taken
(if asked); then logit_bias is added, eos / stop ids are masked until min_tokens, the constraint bitmask is
applied, repetition_penalty (HF: prompt + output tokens, divide positive logits, multiply negative ones) and
frequency / presence penalties (OpenAI: output tokens) change the logits (logits_processors.py). Greedy rows
take the argmax of the result; the others divide by the temperature, softmax, and filter: top_k (0 = off),
then top_p on the renormalized top-k distribution, then min_p (p < min_p * p_max) and top_a
(p < top_a * p_max^2), both on the temperature-scaled distribution (draw.py). The token is drawn by inverse
CDF from one uniform number per row, taken from the sample's own generator when it has a seed, so the draw
never depends on the batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from qwen3_api.engine.draw import sample_from_logits
from qwen3_api.engine.logits_processors import (
    apply_constraints,
    apply_logit_bias,
    apply_min_tokens,
    apply_penalties,
)
from qwen3_api.engine.sampling_batch import SamplingBatch
from qwen3_api.engine.sequence import Sequence


def argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """The argmax of each row. On the CPU through numpy, whose argmax is vectorized: torch's CPU argmax takes
    ~260 us over a 152K vocabulary, numpy's ~16 us (the same answer: the first maximum, a NaN counted as one)."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return torch.from_numpy(x.numpy().argmax(axis=-1))
    return x.argmax(dim=-1)


@dataclass(slots=True)
class SamplerOutput:
    """One token per row; a row in ``failed_rows`` (its constraint raised) has no meaningful token."""

    token_ids: list[int]
    logprobs: list[dict[int, float] | None]  # per row: chosen token + top-k of the raw distribution
    failed_rows: dict[int, Exception] = field(default_factory=dict)  # row -> why its constraint failed


class Sampler:
    """Turns the logits of the rows that sample this step into tokens, vectorized over the batch."""

    def __init__(self, vocab_size: int, eos_token_ids: list[int], seed: int = 0) -> None:
        self.vocab_size = vocab_size  # the tokenizer's size: ids beyond it are never sampled
        self.eos_token_ids = list(eos_token_ids)
        self.rng = random.Random(seed)  # for the rows without a seed of their own

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        """logits: float32 [B, model_vocab], one row per sequence of ``seqs`` (same order)."""
        batch = SamplingBatch.from_sequences(seqs)
        vocab = min(self.vocab_size, logits.shape[1])
        if batch.plain_greedy:
            return SamplerOutput(argmax_rows(logits[:, :vocab]).tolist(), [None] * len(batch))
        full_width = logits.shape[1]
        logits = logits[:, :vocab].float().contiguous()
        raw_logprobs = torch.log_softmax(logits[batch.logprob_rows], dim=-1) if batch.logprob_rows else None
        failed = self.transform(logits, batch, full_width)
        tokens = self.draw(logits, batch)
        return SamplerOutput(tokens, gather_logprobs(raw_logprobs, tokens, batch), failed)

    def process_logits(
        self, logits: torch.Tensor, seqs: list[Sequence], full_width: int | None = None
    ) -> dict[int, Exception]:
        """Apply logit_bias, the min_tokens mask, constraints and penalties to logits [B, V] in place; returns
        the rows whose constraint raised."""
        return self.transform(logits, SamplingBatch.from_sequences(seqs), full_width or logits.shape[1])

    def transform(self, logits: torch.Tensor, batch: SamplingBatch, full_width: int) -> dict[int, Exception]:
        """The logit processors, in place; ``full_width``: the model's vocabulary (the bitmasks' width)."""
        apply_logit_bias(logits, batch)
        apply_min_tokens(logits, batch, self.eos_token_ids)
        failed = apply_constraints(logits, batch, full_width)
        apply_penalties(logits, batch)
        return failed

    def draw(self, logits: torch.Tensor, batch: SamplingBatch) -> list[int]:
        """The argmax of the greedy rows, a filtered draw for the others (one uniform each, in row order)."""
        num = len(batch)
        tokens = torch.empty(num, dtype=torch.long, device=logits.device)
        greedy_rows, random_rows = batch.greedy_rows, batch.random_rows
        if greedy_rows:
            if len(greedy_rows) == num:
                tokens = argmax_rows(logits)
            else:
                idx = torch.tensor(greedy_rows, device=logits.device)
                tokens[idx] = logits[idx].argmax(dim=-1)
        if random_rows:
            idx = torch.tensor(random_rows, device=logits.device)
            sub = logits if len(random_rows) == num else logits[idx]
            uniforms = [(batch.seqs[i].rng or self.rng).random() for i in random_rows]
            drawn = sample_from_logits(sub, [batch.params[i] for i in random_rows], uniforms)
            if len(random_rows) == num:
                tokens = drawn
            else:
                tokens[idx] = drawn
        return tokens.tolist()


def gather_logprobs(
    raw_logprobs: torch.Tensor | None, tokens: list[int], batch: SamplingBatch
) -> list[dict[int, float] | None]:
    """Per row: {chosen token: logprob} plus the top-k of the raw distribution (None for rows without)."""
    logprobs: list[dict[int, float] | None] = [None] * len(batch)
    if raw_logprobs is None:
        return logprobs
    rows, params = batch.logprob_rows, batch.params
    k_max = max(params[i].logprobs or 0 for i in rows)
    chosen = torch.tensor([tokens[i] for i in rows], device=raw_logprobs.device)
    chosen_lp = raw_logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
    if k_max > 0:
        top_lp, top_ids = raw_logprobs.topk(k_max, dim=-1)
        top_lp, top_ids = top_lp.tolist(), top_ids.tolist()
    for j, i in enumerate(rows):
        k = params[i].logprobs or 0
        entry = {tokens[i]: chosen_lp[j]}
        if k:
            for tid, lp in zip(top_ids[j][:k], top_lp[j][:k], strict=True):
                entry.setdefault(tid, lp)
        logprobs[i] = entry
    return logprobs

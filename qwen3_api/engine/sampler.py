"""Logits -> next tokens (and logprobs) for a whole batch at once.

Order of operations, per row: the vocabulary tail beyond the tokenizer is cut off; raw logprobs are taken
(if asked); then logit_bias is added, eos / stop ids are masked until min_tokens, the constraint bitmask is
applied, repetition_penalty (HF: prompt + output tokens, divide positive logits, multiply negative ones) and
frequency / presence penalties (OpenAI: output tokens) change the logits. Greedy rows take the argmax of
the result; the others divide by the temperature, softmax, and filter: top_k (0 = off), then top_p on the
renormalized top-k distribution, then min_p (p < min_p * p_max) and top_a (p < top_a * p_max^2), both on
the temperature-scaled distribution. The token is drawn by inverse CDF from one uniform number per row,
taken from the sample's own generator when it has a seed, so the draw never depends on the batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from qwen3_api.engine.constraint import allocate_bitmask, apply_bitmask
from qwen3_api.engine.sequence import Sequence


@dataclass(slots=True)
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[dict[int, float] | None]  # per row: chosen token + top-k of the raw distribution


class Sampler:
    """Turns the logits of the rows that sample this step into tokens, vectorized over the batch."""

    def __init__(self, vocab_size: int, eos_token_ids: list[int], seed: int = 0) -> None:
        self.vocab_size = vocab_size  # the tokenizer's size: ids beyond it are never sampled
        self.eos_token_ids = list(eos_token_ids)
        self.rng = random.Random(seed)  # for the rows without a seed of their own
        self.failures: list[tuple[Sequence, Exception]] = []  # constraint errors, collected by the engine

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        """logits: float32 [B, model_vocab], one row per sequence of ``seqs`` (same order)."""
        vocab = min(self.vocab_size, logits.shape[1])
        full_width = logits.shape[1]
        params = [s.params for s in seqs]
        num = len(seqs)
        fast = all(
            p.greedy and p.logit_bias is None and not p.has_penalties and p.logprobs is None
            and s.constraint is None and not self._min_tokens_active(s)
            for s, p in zip(seqs, params, strict=True)
        )
        if fast:
            return SamplerOutput(logits[:, :vocab].argmax(dim=-1).tolist(), [None] * num)

        logits = logits[:, :vocab].float().contiguous()
        lp_rows = [i for i, p in enumerate(params) if p.logprobs is not None]
        raw_logprobs = torch.log_softmax(logits[lp_rows], dim=-1) if lp_rows else None
        self.process_logits(logits, seqs, full_width)

        tokens = torch.empty(num, dtype=torch.long, device=logits.device)
        greedy_rows = [i for i, p in enumerate(params) if p.greedy]
        random_rows = [i for i, p in enumerate(params) if not p.greedy]
        if greedy_rows:
            if len(greedy_rows) == num:
                tokens = logits.argmax(dim=-1)
            else:
                idx = torch.tensor(greedy_rows, device=logits.device)
                tokens[idx] = logits[idx].argmax(dim=-1)
        if random_rows:
            idx = torch.tensor(random_rows, device=logits.device)
            sub = logits if len(random_rows) == num else logits[idx]
            uniforms = [(seqs[i].rng or self.rng).random() for i in random_rows]
            drawn = sample_from_logits(sub, [params[i] for i in random_rows], uniforms)
            if len(random_rows) == num:
                tokens = drawn
            else:
                tokens[idx] = drawn
        token_list = tokens.tolist()

        logprobs: list[dict[int, float] | None] = [None] * num
        if raw_logprobs is not None:
            k_max = max(params[i].logprobs or 0 for i in lp_rows)
            chosen = torch.tensor([token_list[i] for i in lp_rows], device=logits.device)
            chosen_lp = raw_logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
            if k_max > 0:
                top_lp, top_ids = raw_logprobs.topk(k_max, dim=-1)
                top_lp, top_ids = top_lp.tolist(), top_ids.tolist()
            for j, i in enumerate(lp_rows):
                k = params[i].logprobs or 0
                entry = {token_list[i]: chosen_lp[j]}
                if k:
                    for tid, lp in zip(top_ids[j][:k], top_lp[j][:k], strict=True):
                        entry.setdefault(tid, lp)
                logprobs[i] = entry
        return SamplerOutput(token_list, logprobs)

    def process_logits(self, logits: torch.Tensor, seqs: list[Sequence], full_width: int | None = None) -> None:
        """Apply logit_bias, the min_tokens mask, constraints and penalties to logits [B, V] in place."""
        vocab = logits.shape[1]
        params = [s.params for s in seqs]
        self._apply_logit_bias(logits, params, vocab)
        self._apply_min_tokens(logits, seqs, vocab)
        self._apply_constraints(logits, seqs, full_width or vocab)
        self._apply_penalties(logits, seqs, vocab)

    # -- logit processors (in place, only over the rows that use them) -----------------------------------
    def _min_tokens_active(self, seq: Sequence) -> bool:
        return seq.params.min_tokens > seq.num_output_tokens

    def _apply_logit_bias(self, logits: torch.Tensor, params: list, vocab: int) -> None:
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i, p in enumerate(params):
            if p.logit_bias:
                for tid, bias in p.logit_bias.items():
                    if tid < vocab:
                        rows.append(i)
                        cols.append(tid)
                        vals.append(bias)
        if rows:
            dev = logits.device
            logits.index_put_(
                (torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)),
                torch.tensor(vals, dtype=logits.dtype, device=dev),
                accumulate=True,
            )

    def _apply_min_tokens(self, logits: torch.Tensor, seqs: list[Sequence], vocab: int) -> None:
        rows: list[int] = []
        cols: list[int] = []
        for i, seq in enumerate(seqs):
            if self._min_tokens_active(seq):
                banned = set(seq.params.stop_token_ids)
                if not seq.params.ignore_eos:
                    banned.update(self.eos_token_ids)
                for tid in banned:
                    if tid < vocab:
                        rows.append(i)
                        cols.append(tid)
        if rows:
            dev = logits.device
            logits[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)] = float("-inf")

    def _apply_constraints(self, logits: torch.Tensor, seqs: list[Sequence], full_width: int) -> None:
        if all(s.constraint is None for s in seqs):
            return
        bitmask = allocate_bitmask(len(seqs), full_width)
        constrained = False
        for i, seq in enumerate(seqs):
            if seq.constraint is None:
                continue
            try:
                if seq.constraint.fill_bitmask(bitmask, i):
                    constrained = True
            except Exception as exc:  # one broken constraint fails its own request, not the batch
                bitmask[i] = -1
                self.failures.append((seq, exc))
        if constrained:
            apply_bitmask(logits, bitmask.to(logits.device))

    def _apply_penalties(self, logits: torch.Tensor, seqs: list[Sequence], vocab: int) -> None:
        # sparse: only the (row, token) pairs seen in the prompt or the output are touched, never [B, V]
        dev = logits.device
        row_parts: list[torch.Tensor] = []
        col_parts: list[torch.Tensor] = []
        cnt_parts: list[torch.Tensor] = []
        rep: list[float] = []
        freq: list[float] = []
        pres: list[float] = []
        penalized: list[int] = []
        for i, seq in enumerate(seqs):
            p = seq.params
            if not p.has_penalties:
                continue
            penalized.append(i)
            counts = seq.output_counts or {}
            out_ids = torch.tensor(list(counts), dtype=torch.long, device=dev)
            out_cnt = torch.tensor(list(counts.values()), dtype=logits.dtype, device=dev)
            if p.repetition_penalty != 1.0:  # HF: the prompt's tokens count too (with no frequency)
                prompt_ids = self._prompt_ids(seq, vocab, dev)
                cols, inverse = torch.unique(torch.cat([prompt_ids, out_ids]), return_inverse=True)
                cnt = torch.zeros(cols.shape[0], dtype=logits.dtype, device=dev)
                cnt.index_add_(0, inverse[prompt_ids.shape[0] :], out_cnt)
            else:
                cols, cnt = out_ids, out_cnt
            keep = cols < vocab
            cols, cnt = cols[keep], cnt[keep]
            j = len(rep)
            row_parts.append(torch.full_like(cols, j))
            col_parts.append(cols)
            cnt_parts.append(cnt)
            rep.append(p.repetition_penalty)
            freq.append(p.frequency_penalty)
            pres.append(p.presence_penalty)
        if not rep:
            return
        rows_of = torch.tensor(penalized, device=dev)
        local = torch.cat(row_parts)
        rows = rows_of[local]
        cols = torch.cat(col_parts)
        cnt = torch.cat(cnt_parts)
        vals = logits[rows, cols]
        penalty = torch.tensor(rep, dtype=logits.dtype, device=dev)[local]
        vals = torch.where(vals > 0, vals / penalty, vals * penalty)
        vals = vals - torch.tensor(freq, dtype=logits.dtype, device=dev)[local] * cnt
        vals = vals - torch.tensor(pres, dtype=logits.dtype, device=dev)[local] * (cnt > 0).to(vals.dtype)
        logits[rows, cols] = vals

    @staticmethod
    def _prompt_ids(seq: Sequence, vocab: int, device: torch.device) -> torch.Tensor:
        # built once per sequence: the prompt never changes
        if seq.prompt_ids_tensor is None:
            ids = torch.tensor(sorted(set(seq.token_ids[: seq.num_prompt_tokens])), dtype=torch.long)
            seq.prompt_ids_tensor = ids[ids < vocab].to(device)
        return seq.prompt_ids_tensor


def sample_from_logits(logits: torch.Tensor, params: list, uniforms: list[float]) -> torch.Tensor:
    """Draw one token per row of logits [R, V] (temperature > 0) given one uniform in [0, 1) per row."""
    dev = logits.device
    temps = torch.tensor([p.temperature for p in params], dtype=logits.dtype, device=dev)
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    targets = torch.tensor(uniforms, dtype=probs.dtype, device=dev)[:, None]
    if all(p.top_k > 0 or p.top_p < 1.0 for p in params):
        # every row keeps a prefix of its sorted candidates: sample among those, no more [R, V] passes
        values, ids, keep = _sorted_keep(probs, params)
        relative = _relative_mask(values, values[:, :1], params)
        if relative is not None:
            keep &= relative
        cdf = (values * keep).cumsum(dim=-1)
        chosen = torch.searchsorted(cdf, targets * cdf[:, -1:], right=True).clamp_(max=values.shape[1] - 1)
        return ids.gather(1, chosen).squeeze(1)
    keep = filter_mask(probs, params)
    if keep is not None:
        probs = probs * keep
    cdf = probs.cumsum(dim=-1)
    # the first index whose cdf exceeds the target: zero-probability tokens are never chosen
    chosen = torch.searchsorted(cdf, targets * cdf[:, -1:], right=True).squeeze(1)
    return chosen.clamp_(max=logits.shape[1] - 1)


TOP_P_CANDIDATES = 1024


def _sorted_candidates(
    probs: torch.Tensor, top_k: list[int], top_p: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The leading probabilities of each row, descending, and their ids: enough of them to decide top_k
    and top_p exactly. A full sort of the vocabulary is slow, so first try the top candidates: they suffice
    when every row's top_k fits in them, or (top_k off) when they already hold top_p of the mass."""
    vocab = probs.shape[1]
    k_max = max(top_k)
    if all(p >= 1.0 for p in top_p) and k_max < vocab:
        return probs.topk(k_max, dim=-1)
    width = max(TOP_P_CANDIDATES, k_max if k_max < vocab else 0)
    if width < vocab:
        values, ids = probs.topk(width, dim=-1)
        mass = values.sum(dim=-1).tolist()
        if all(k <= width if k < vocab else m >= p for k, p, m in zip(top_k, top_p, mass, strict=True)):
            return values, ids
    return probs.sort(dim=-1, descending=True)


def _sorted_keep(probs: torch.Tensor, params: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, ids, keep) over each row's sorted candidates: keep marks what top_k and then top_p (on the
    top-k renormalized distribution) leave; every kept token is among the candidates."""
    dev = probs.device
    vocab = probs.shape[1]
    top_k = [min(p.top_k or vocab, vocab) for p in params]
    top_p_list = [p.top_p for p in params]
    values, ids = _sorted_candidates(probs, top_k, top_p_list)
    k_t = torch.tensor(top_k, device=dev)[:, None]
    keep = torch.arange(values.shape[1], device=dev)[None, :] < k_t
    if any(p < 1.0 for p in top_p_list):
        top_p = torch.tensor(top_p_list, dtype=probs.dtype, device=dev)[:, None]
        kept = values * keep
        cum = kept.cumsum(dim=-1)
        total = torch.where(k_t < vocab, cum[:, -1:], probs.sum(dim=-1, keepdim=True))
        keep &= ((cum - kept) / total < top_p) | (top_p >= 1.0)
    return values, ids, keep


def _relative_mask(probs: torch.Tensor, pmax: torch.Tensor, params: list) -> torch.Tensor | None:
    """min_p (p >= min_p * p_max) and top_a (p >= top_a * p_max^2); None when no row uses them."""
    if not any(p.min_p > 0.0 or p.top_a > 0.0 for p in params):
        return None
    dev = probs.device
    min_p = torch.tensor([p.min_p for p in params], dtype=probs.dtype, device=dev)[:, None]
    top_a = torch.tensor([p.top_a for p in params], dtype=probs.dtype, device=dev)[:, None]
    return (probs >= min_p * pmax) & (probs >= top_a * pmax * pmax)


def filter_mask(probs: torch.Tensor, params: list) -> torch.Tensor | None:
    """bool [R, V]: the tokens top_k / top_p / min_p / top_a keep (None when no row filters)."""
    if not any(p.has_filters for p in params):
        return None
    dev = probs.device
    keep = torch.ones_like(probs, dtype=torch.bool)
    sort_rows = [i for i, p in enumerate(params) if p.top_k > 0 or p.top_p < 1.0]
    if sort_rows:
        idx = torch.tensor(sort_rows, device=dev)
        sub = probs[idx]
        _, ids, sorted_keep = _sorted_keep(sub, [params[i] for i in sort_rows])
        sub_keep = torch.zeros_like(sub, dtype=torch.bool)
        sub_keep.scatter_(1, ids, sorted_keep)
        keep[idx] = sub_keep
    relative = _relative_mask(probs, probs.max(dim=-1, keepdim=True).values, params)
    if relative is not None:
        keep &= relative
    return keep

"""Drawing one token per row: temperature, then the top-k / top-p / min-p / top-a filters, then inverse CDF.

Two strategies for the same filter semantics: when every row has top_k or top_p, the draw runs over each
row's sorted leading candidates only (no more passes over the vocabulary); otherwise a full-vocabulary
mask (``filter_mask``) is applied to the probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from qwen3_api.engine.sampling_params import SamplingParams


def sample_from_logits(
    logits: torch.Tensor, params: Seq[SamplingParams], uniforms: list[float]
) -> torch.Tensor:
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


def _sorted_keep(
    probs: torch.Tensor, params: Seq[SamplingParams]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _relative_mask(
    probs: torch.Tensor, pmax: torch.Tensor, params: Seq[SamplingParams]
) -> torch.Tensor | None:
    """min_p (p >= min_p * p_max) and top_a (p >= top_a * p_max^2); None when no row uses them."""
    if not any(p.min_p > 0.0 or p.top_a > 0.0 for p in params):
        return None
    dev = probs.device
    min_p = torch.tensor([p.min_p for p in params], dtype=probs.dtype, device=dev)[:, None]
    top_a = torch.tensor([p.top_a for p in params], dtype=probs.dtype, device=dev)[:, None]
    return (probs >= min_p * pmax) & (probs >= top_a * pmax * pmax)


def filter_mask(probs: torch.Tensor, params: Seq[SamplingParams]) -> torch.Tensor | None:
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

"""The sampler's transform stage: logit_bias, the min_tokens mask, constraint bitmasks and penalties, applied
in place to the logits [B, V] of one step, each only over the rows that use it."""

from __future__ import annotations

import torch

from qwen3_api.engine.constraint import allocate_bitmask, apply_bitmask
from qwen3_api.engine.sampling_batch import SamplingBatch
from qwen3_api.engine.sequence import Sequence


def apply_logit_bias(logits: torch.Tensor, batch: SamplingBatch) -> None:
    """Add each row's logit_bias (ids beyond the vocabulary are ignored)."""
    vocab = logits.shape[1]
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, p in enumerate(batch.params):
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


def apply_min_tokens(logits: torch.Tensor, batch: SamplingBatch, eos_token_ids: list[int]) -> None:
    """Forbid the stop ids (and eos, unless ignore_eos) of the rows still short of their min_tokens."""
    vocab = logits.shape[1]
    rows: list[int] = []
    cols: list[int] = []
    for i in batch.min_tokens_rows:
        params = batch.params[i]
        banned = set(params.stop_token_ids)
        if not params.ignore_eos:
            banned.update(eos_token_ids)
        for tid in banned:
            if tid < vocab:
                rows.append(i)
                cols.append(tid)
    if rows:
        dev = logits.device
        logits[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)] = float("-inf")


def apply_constraints(logits: torch.Tensor, batch: SamplingBatch, full_width: int) -> dict[int, Exception]:
    """Mask each constrained row to what its TokenConstraint allows; the rows whose constraint raised, with
    why (their row is left unconstrained: the caller fails that request, not the batch)."""
    seqs = batch.seqs
    failed: dict[int, Exception] = {}
    if all(s.constraint is None for s in seqs):
        return failed
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
            failed[i] = exc
    if constrained:
        apply_bitmask(logits, bitmask.to(logits.device))
    return failed


def apply_penalties(logits: torch.Tensor, batch: SamplingBatch) -> None:
    """repetition_penalty (HF: prompt + output tokens, divide positive logits, multiply negative ones), then
    frequency and presence penalties (OpenAI: output tokens)."""
    # sparse: only the (row, token) pairs seen in the prompt or the output are touched, never [B, V]
    vocab = logits.shape[1]
    dev = logits.device
    row_parts: list[torch.Tensor] = []
    col_parts: list[torch.Tensor] = []
    cnt_parts: list[torch.Tensor] = []
    rep: list[float] = []
    freq: list[float] = []
    pres: list[float] = []
    for i in batch.penalty_rows:
        seq, p = batch.seqs[i], batch.params[i]
        counts = seq.output_counts or {}
        out_ids = torch.tensor(list(counts), dtype=torch.long, device=dev)
        out_cnt = torch.tensor(list(counts.values()), dtype=logits.dtype, device=dev)
        if p.repetition_penalty != 1.0:  # HF: the prompt's tokens count too (with no frequency)
            prompt_ids = _prompt_ids(seq, vocab, dev)
            cols, inverse = torch.unique(torch.cat([prompt_ids, out_ids]), return_inverse=True)
            cnt = torch.zeros(cols.shape[0], dtype=logits.dtype, device=dev)
            cnt.index_add_(0, inverse[prompt_ids.shape[0] :], out_cnt)
        else:
            cols, cnt = out_ids, out_cnt
        keep = cols < vocab
        cols, cnt = cols[keep], cnt[keep]
        row_parts.append(torch.full_like(cols, len(rep)))
        col_parts.append(cols)
        cnt_parts.append(cnt)
        rep.append(p.repetition_penalty)
        freq.append(p.frequency_penalty)
        pres.append(p.presence_penalty)
    if not rep:
        return
    rows_of = torch.tensor(batch.penalty_rows, device=dev)
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


def _prompt_ids(seq: Sequence, vocab: int, device: torch.device) -> torch.Tensor:
    # built once per sequence: the prompt never changes
    if seq.prompt_ids_tensor is None:
        ids = torch.tensor(sorted(set(seq.token_ids[: seq.num_prompt_tokens])), dtype=torch.long)
        seq.prompt_ids_tensor = ids[ids < vocab].to(device)
    return seq.prompt_ids_tensor

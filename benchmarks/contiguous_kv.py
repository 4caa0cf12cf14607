"""Attention metadata for running the model without the engine (benchmarks): every sequence owns a fixed,
contiguous range of KV blocks. tests/model/helpers.py keeps the same helper for the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from qwen3_api.kernels.metadata import AttentionMetadata  # noqa: E402


def make_contiguous_metadata(
    seq_lens: list[int],
    device: torch.device | str = "cpu",
    block_size: int = 16,
    *,
    context_lens: list[int] | None = None,
    max_model_len: int | None = None,
    seq_ids: list[int] | None = None,
) -> AttentionMetadata:
    """Sequence b owns the block range [s*n, (s+1)*n) with s = seq_ids[b] (default b) and
    n = ceil(max_model_len / block_size).

    seq_lens are the query lengths of this step; context_lens (default: seq_lens, a fresh prefill) the history
    lengths after it. Keep max_model_len and seq_ids fixed across steps so the blocks stay put (chunked
    prefill, decode).
    """
    seq_ids = list(range(len(seq_lens))) if seq_ids is None else list(seq_ids)
    context_lens = list(seq_lens) if context_lens is None else list(context_lens)
    longest = max_model_len or max(context_lens, default=1)
    per_seq = -(-longest // block_size)
    tables = [
        list(range(s * per_seq, s * per_seq + -(-c // block_size)))
        for s, c in zip(seq_ids, context_lens, strict=True)
    ]
    return AttentionMetadata.build(list(seq_lens), context_lens, tables, block_size, device)

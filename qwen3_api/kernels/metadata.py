"""The kernels' input contract: attention metadata for a flat batch over a paged KV cache (nano-vllm's
"context", passed explicitly).

A flat batch holds B sequences, T tokens in all, with no padding. Sequence b owns the query tokens
cu_seqlens_q[b]:cu_seqlens_q[b+1]; after this step its KV history is context_lens[b] tokens long, the new
tokens being the last ones. The K/V of the new tokens are written to slot_mapping (slot = block_id *
block_size + offset) before attention reads the history back through block_tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class AttentionMetadata:
    """Where each sequence's queries sit in the flat batch and where its KV history lives in the cache."""

    cu_seqlens_q: torch.Tensor  # int32 [B+1], on device
    context_lens: torch.Tensor  # int32 [B], on device
    slot_mapping: torch.Tensor  # int64 [T], on device
    block_tables: torch.Tensor  # int32 [B, max_blocks_per_seq], on device, padded with 0
    query_lens_cpu: list[int]  # host copies: the CPU path slices without a device->host sync
    context_lens_cpu: list[int]
    max_query_len: int
    max_context_len: int
    is_decode: bool  # every query_len == 1

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens_cpu)

    @classmethod
    def build(
        cls,
        query_lens: list[int],
        context_lens: list[int],
        block_tables: list[list[int]],
        block_size: int,
        device: torch.device | str,
    ) -> AttentionMetadata:
        """Metadata from host lists: the new tokens of sequence b are the last query_lens[b] of its
        context_lens[b] positions, stored in the blocks block_tables[b] (in order)."""
        if len(query_lens) != len(context_lens) or len(query_lens) != len(block_tables):
            raise ValueError("query_lens, context_lens and block_tables must have one entry per sequence")
        slots: list[int] = []
        for q, c, blocks in zip(query_lens, context_lens, block_tables, strict=True):
            if not 0 < q <= c or len(blocks) * block_size < c:
                raise ValueError(f"bad sequence: query_len={q} context_len={c} blocks={len(blocks)}")
            for pos in range(c - q, c):
                slots.append(blocks[pos // block_size] * block_size + pos % block_size)
        width = max((len(b) for b in block_tables), default=0)
        table = [b + [0] * (width - len(b)) for b in block_tables]
        cu = [0]
        for q in query_lens:
            cu.append(cu[-1] + q)
        return cls(
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=device),
            context_lens=torch.tensor(context_lens, dtype=torch.int32, device=device),
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
            block_tables=torch.tensor(table, dtype=torch.int32, device=device).reshape(len(table), width),
            query_lens_cpu=list(query_lens),
            context_lens_cpu=list(context_lens),
            max_query_len=max(query_lens, default=0),
            max_context_len=max(context_lens, default=0),
            is_decode=bool(query_lens) and all(q == 1 for q in query_lens),
        )

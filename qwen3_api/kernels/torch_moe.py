"""The mixture-of-experts layer in plain torch: the CPU backend, and the reference of the Triton kernel.

Four strategies by size, all computing only the experts each token is routed to: one native call for a
one-token decode step (cpu_native.cpp), gathered weight copies for tiny batches, pair by pair for a few
pairs, else the tokens sorted by expert and one matmul per expert.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import qwen3_api.kernels.cpu_native as cpu_native
from qwen3_api.kernels.torch_linear import is_transposed, linear

# Below this many bytes of gathered w13 copies a step (decode batches of small models) one batched matmul
# over per-pair weight copies beats a loop of tiny per-expert matmuls (~10 ops per expert at several us each);
# above it the copies cost more than the ops they save. Real-size experts (6 MB each) never qualify.
GATHER_BYTES = 1 << 19


def _gathered_moe(
    hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor, flat_ids: torch.Tensor
) -> torch.Tensor:
    """Each (token, expert) pair with its own copy of the expert's weights: two bmm calls, no host sync."""
    num_tokens, top_k = topk_weights.shape
    inter = w2.shape[-1]
    xs = hidden.repeat_interleave(top_k, dim=0).unsqueeze(-1)  # [T*K, H, 1]
    gate_up = torch.bmm(w13.index_select(0, flat_ids), xs).squeeze(-1)  # [T*K, 2I]
    act = (F.silu(gate_up[:, :inter]) * gate_up[:, inter:]).unsqueeze(-1)
    ys = torch.bmm(w2.index_select(0, flat_ids), act).view(num_tokens, top_k, -1)  # [T, K, H]
    return (ys.float() * topk_weights.float().unsqueeze(-1)).sum(dim=1).to(hidden.dtype)


# Up to this many (token, expert) pairs (a one-token decode step) each pair runs as its own pair of matvecs,
# accumulated in place: half the ops of sorting the pairs by expert, which only pays when experts repeat.
PER_PAIR_MAX = 8


def _per_pair_moe(
    hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor
) -> torch.Tensor:
    """sum_k w[t,k] * expert_{id[t,k]}(x[t]) pair by pair, in float32, without sorting."""
    inter = w2.shape[-1]
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for t, (ids, weights) in enumerate(zip(topk_ids.tolist(), topk_weights.float().tolist(), strict=True)):
        x, acc = hidden[t : t + 1], out[t : t + 1]
        for expert, weight in zip(ids, weights, strict=True):
            gate_up = linear(x, w13[expert])
            acc.add_(linear(F.silu(gate_up[:, :inter]) * gate_up[:, inter:], w2[expert]), alpha=weight)
    return out.to(hidden.dtype)


def fused_moe(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """SwiGLU experts applied to the tokens routed to them only: sum_k w[t,k] * expert_{id[t,k]}(x[t]).

    hidden [T, H], w13 [E, 2I, H] (gate rows then up rows), w2 [E, H, I], topk_* [T, K] -> [T, H].
    Token copies are sorted by expert so each expert runs one matmul on a contiguous slice.
    """
    num_tokens, top_k = topk_ids.shape
    flat_ids = topk_ids.reshape(-1)
    native = cpu_native.ops() if hidden.device.type == "cpu" and hidden.dtype == torch.float32 else None
    if native is not None and flat_ids.numel() <= PER_PAIR_MAX and is_transposed(w13) and is_transposed(w2):
        # a one-token decode step in one native call (cpu_native.cpp)
        return native.moe_decode(hidden, w13.transpose(1, 2), w2.transpose(1, 2), topk_ids, topk_weights)
    if flat_ids.numel() * w13[0].numel() * w13.element_size() <= GATHER_BYTES:
        return _gathered_moe(hidden, w13, w2, topk_weights, flat_ids)
    if flat_ids.numel() <= PER_PAIR_MAX:
        return _per_pair_moe(hidden, w13, w2, topk_weights, topk_ids)
    order = torch.argsort(flat_ids, stable=True)
    # the expert loop needs host counts: this is the one sync of the torch path (free on CPU)
    counts = torch.bincount(flat_ids, minlength=w13.shape[0]).tolist()
    xs = hidden.index_select(0, order // top_k)
    ys = torch.empty_like(xs)
    inter = w2.shape[-1]
    start = 0
    for expert, count in enumerate(counts):
        if count == 0:
            continue
        end = start + count
        gate_up = linear(xs[start:end], w13[expert])
        ys[start:end] = linear(F.silu(gate_up[:, :inter]) * gate_up[:, inter:], w2[expert])
        start = end
    unsorted = torch.empty_like(ys).index_copy_(0, order, ys)  # index_copy_: far cheaper than ys[order] = ...
    weighted = unsorted.view(num_tokens, top_k, -1).float() * topk_weights.float().unsqueeze(-1)
    return weighted.sum(dim=1).to(hidden.dtype)

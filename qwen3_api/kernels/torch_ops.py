"""Plain-torch hot paths: the CPU backend and the reference the Triton kernels are tested against.

Device-agnostic (they also run on CUDA), but written for CPU: host-side lengths come from the metadata's
*_cpu lists, so slicing needs no device->host sync.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from qwen3_api.kernels import cpu_native

if TYPE_CHECKING:
    from qwen3_api.model.attention import AttentionMetadata

logger = logging.getLogger(__name__)


# oneDNN's linear (what torch.compile's CPU backend calls): for float32 batches of 2+ rows it is 1.4-3x faster
# than the MKL sgemm F.linear reaches on AMD EPYC, whose slow non-Intel code path MKL picks there
# (benchmarks/RESULTS.md, "CPU matmul paths"). A single row goes to the native gemv (cpu_native.cpp) over the
# transposed weight layout (transposed_weights), else to MKL, whose gemv is ~2x faster on that layout too.
_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None


def _transposed(w: torch.Tensor) -> bool:
    """Whether a 2-D or 3-D w [..., out, in] is the transpose of a contiguous [..., in, out] tensor. Strides
    only, ~1 us, since this runs ~25 times a decoded token."""
    out, inp = w.shape[-2:]
    if w.ndim == 2:
        return w.stride() == (1, out)
    return w.ndim == 3 and w.stride() == (out * inp, 1, out)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, routed to the fastest CPU matmul for the shape; x [..., in], weight [out, in] (any strides)."""
    if x.dtype == torch.float32 and x.device.type == "cpu":
        if x.numel() > x.shape[-1]:
            if _ONEDNN_LINEAR is not None:
                return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
        elif x.numel() == x.shape[-1] and weight.ndim == 2 and _transposed(weight):  # one row: a decode step
            native = cpu_native.ops()
            if native is not None and (weight.shape[0] <= NATIVE_NARROW_MAX or _tuned["native_wide"]):
                return native.linear_t(x, weight, bias)
    return F.linear(x, weight, bias)


# A one-row linear over a transposed float32 weight runs native (cpu_native.cpp) up to this many outputs: the
# projections, where it matches MKL's gemv on a Xeon and, unlike MKL on AMD, splits the row over threads.
# A wider one (lm_head) runs native only where tune_native_linear timed it faster than MKL: on the Xeon MKL
# streams the 311 MB lm_head 5-10 % faster (benchmarks/RESULTS.md, "Native CPU decode kernels").
NATIVE_NARROW_MAX = 8192
_tuned = {"native_wide": False}


def tune_native_linear(weight: torch.Tensor, repeats: int = 5) -> bool:
    """Time one row through a wide transposed float32 weight (the lm_head) natively and with MKL, alternating,
    and route wide one-row linears to the faster from now on. Returns whether that is the native kernel."""
    native = cpu_native.ops()
    if native is None or weight.dtype != torch.float32 or weight.ndim != 2 or not _transposed(weight):
        return _tuned["native_wide"]
    x = torch.randn(1, weight.shape[1], dtype=weight.dtype)
    best = {"native": math.inf, "mkl": math.inf}
    runs = {"native": lambda: native.linear_t(x, weight, None), "mkl": lambda: F.linear(x, weight)}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_:  # round 0 warms both up
                best[name] = min(best[name], time.perf_counter() - start)
    _tuned["native_wide"] = best["native"] < best["mkl"]
    logger.info("one-row linear [%d x %d]: native %.2f ms, MKL %.2f ms -> %s", weight.shape[0], weight.shape[1],
                1e3 * best["native"], 1e3 * best["mkl"], "native" if _tuned["native_wide"] else "MKL")
    return _tuned["native_wide"]


def transposed_weights(device: torch.device | str | None, dtype: torch.dtype) -> bool:
    """Whether weights [out, in] should be stored as the transpose of a contiguous [in, out] tensor.

    On the CPU in float32, MKL's gemv over that layout (a one-row decode step) runs ~2x faster than over
    row-major weights (311 MB lm_head: 15-18 ms vs 35 ms on one core), and oneDNN takes either layout at the
    same speed. bfloat16 and CUDA show no gain and keep the checkpoint's row-major layout.
    """
    return dtype == torch.float32 and torch.device(device if device is not None else "cpu").type == "cpu"


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, in float32, cast back before the weight (as transformers does)."""
    if x.dtype == torch.float32:  # the same math, two no-op casts fewer (~70 ops per decoded token)
        return weight * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps))
    xf = x.float()
    xf = xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D] rotated (neox / rotate_half layout); cos, sin [T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def store_kvcache(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write k, v [T, Hkv, D] into the paged caches [num_blocks, block_size, Hkv, D] at slot_mapping [T]."""
    num_kv_heads, head_dim = k_cache.shape[-2:]
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def _gather_history(cache: torch.Tensor, blocks: torch.Tensor, length: int) -> torch.Tensor:
    """[len(blocks)*block_size, Hkv, D] of one sequence's history, truncated to length."""
    return cache.index_select(0, blocks).flatten(0, 1)[:length]


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    attn: AttentionMetadata,
    scale: float,
    *,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of q [T, Hq, D] over each sequence's paged history -> [T, Hq, D].

    The new tokens' K/V must already be in the cache (store_kvcache). When k, v [T, Hkv, D] of the new tokens
    are also given, a sequence with no earlier history attends to them directly instead of gathering blocks.
    Single-token sequences (decodes) are batched into one SDPA call, also inside a mixed prefill batch.
    """
    if attn.is_decode:
        return _decode_attention(q, k_cache, v_cache, attn.block_tables, attn.context_lens, attn.context_lens_cpu,
                                 scale)  # fmt: skip
    out = torch.empty_like(q)
    decodes: list[int] = []  # sequence indices of single-token queries with a history
    decode_rows: list[int] = []  # and where their token sits in the flat batch
    start = 0
    for b, (q_len, ctx_len) in enumerate(zip(attn.query_lens_cpu, attn.context_lens_cpu, strict=True)):
        if q_len == 1 and ctx_len > 1:
            decodes.append(b)
            decode_rows.append(start)
        else:
            new_kv = (k[start : start + q_len], v[start : start + q_len]) if k is not None and v is not None else None
            out[start : start + q_len] = _prefill_attention(
                q[start : start + q_len], k_cache, v_cache, attn.block_tables[b], ctx_len, scale, new_kv
            )
        start += q_len
    if decodes:
        rows = torch.tensor(decode_rows, device=q.device)
        seqs = torch.tensor(decodes, device=q.device)
        out[rows] = _decode_attention(
            q[rows], k_cache, v_cache, attn.block_tables.index_select(0, seqs), attn.context_lens.index_select(0, seqs),
            [attn.context_lens_cpu[b] for b in decodes], scale,
        )  # fmt: skip
    return out


def _prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    ctx_len: int,
    scale: float,
    new_kv: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """One sequence: q [n, Hq, D] are the last n of its ctx_len positions -> [n, Hq, D]."""
    q_len = q.shape[0]
    # 4-D [1, H, L, D]: with 3-D inputs CPU SDPA falls back to the slow math kernel
    qb = q.transpose(0, 1).unsqueeze(0)
    if q_len == ctx_len and new_kv is not None:
        kb, vb = new_kv
        mask, causal = None, True
    else:
        blocks = block_table[: -(-ctx_len // k_cache.shape[1])]
        kb = _gather_history(k_cache, blocks, ctx_len)
        vb = _gather_history(v_cache, blocks, ctx_len)
        # query i sits at absolute position ctx_len - q_len + i: a causal mask aligned bottom-right
        rows = torch.arange(ctx_len - q_len, ctx_len, device=q.device)
        mask = torch.arange(ctx_len, device=q.device)[None, :] <= rows[:, None]
        causal = False
    out = F.scaled_dot_product_attention(
        qb,
        kb.transpose(0, 1).unsqueeze(0).to(q.dtype),
        vb.transpose(0, 1).unsqueeze(0).to(q.dtype),
        attn_mask=mask,
        is_causal=causal,
        scale=scale,
        enable_gqa=True,
    )
    return out[0].transpose(0, 1)


# Decode attention gathers each sequence's history out of the paged cache before SDPA reads it. Gathering the
# whole batch at once round-trips tens of MB through DRAM per layer; groups whose gathered K+V stay under this
# many bytes are still in cache when SDPA reads them: 3-5x faster at batch 64 with 150-770-token histories on
# the 2-core EPYC (benchmarks/RESULTS.md, "CPU matmul paths"). Larger groups lose it, per-sequence groups
# pay more per-op overhead.
DECODE_GROUP_BYTES = 4 << 20


def _decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    context_lens_cpu: list[int],
    scale: float,
) -> torch.Tensor:
    """One query token per sequence, over groups of sequences of similar length (sorted, cache-sized)."""
    num_seqs = q.shape[0]
    if num_seqs == 1:
        return _decode_group(q, k_cache, v_cache, block_tables, context_lens, context_lens_cpu[0], scale, True)
    order = sorted(range(num_seqs), key=context_lens_cpu.__getitem__)
    perm = torch.tensor(order, device=q.device)
    q, block_tables, context_lens = q[perm], block_tables[perm], context_lens[perm]
    lens = [context_lens_cpu[b] for b in order]
    token_bytes = 2 * k_cache[0, 0].numel() * k_cache.element_size()
    out = torch.empty_like(q)
    start = 0
    while start < num_seqs:
        end = start + 1  # grow the group while its padded K+V fit the budget (lens ascending: the last is longest)
        while end < num_seqs and (end + 1 - start) * lens[end] * token_bytes <= DECODE_GROUP_BYTES:
            end += 1
        out[start:end] = _decode_group(
            q[start:end], k_cache, v_cache, block_tables[start:end], context_lens[start:end], lens[end - 1],
            scale, lens[start] == lens[end - 1],
        )  # fmt: skip
        start = end
    return torch.empty_like(out).index_copy_(0, perm, out)


def _decode_group(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    max_context_len: int,
    scale: float,
    same_length: bool,
) -> torch.Tensor:
    """Gather the group's histories once, pad to the longest, mask (unless all equal), one SDPA call."""
    num_seqs = q.shape[0]
    num_blocks = -(-max_context_len // k_cache.shape[1])
    blocks = block_tables[:, :num_blocks].reshape(-1)
    tail = k_cache.shape[2:]
    # index_select on the flattened table is several times faster than k_cache[blocks] (advanced indexing)
    # [B*nb, bs, Hkv, D] -> [B, Hkv, L, D]
    kb = k_cache.index_select(0, blocks).view(num_seqs, -1, *tail)[:, :max_context_len].transpose(1, 2)
    vb = v_cache.index_select(0, blocks).view(num_seqs, -1, *tail)[:, :max_context_len].transpose(1, 2)
    mask = None
    if not same_length:
        valid = torch.arange(max_context_len, device=q.device)[None, :] < context_lens[:, None]
        mask = valid[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q.view(num_seqs, q.shape[1], 1, q.shape[-1]),
        kb.to(q.dtype),
        vb.to(q.dtype),
        attn_mask=mask,
        scale=scale,
        enable_gqa=True,
    )
    return out.view_as(q)


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
    if native is not None and flat_ids.numel() <= PER_PAIR_MAX and _transposed(w13) and _transposed(w2):
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

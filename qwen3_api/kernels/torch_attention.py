"""Paged attention and the KV store in plain torch: the CPU backend, and the reference of the Triton kernels.

Device-agnostic (they also run on CUDA), but written for CPU: host-side lengths come from the metadata's
*_cpu lists, so slicing needs no device->host sync. On the CPU, decode rows over a float32 cache take the
native kernel (cpu_native.cpp) when it is built; the gathered torch path stays as its fallback and reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import qwen3_api.kernels.cpu_native as cpu_native
from qwen3_api.kernels.fp8_kv import dequantize_kv, is_fp8, store_fp8
from qwen3_api.kernels.metadata import AttentionMetadata

KVScales = tuple[torch.Tensor | None, torch.Tensor | None] | None  # (k_scale, v_scale) of an FP8 cache


def store_kvcache(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """Write k, v [T, Hkv, D] into the paged caches [num_blocks, block_size, Hkv, D] at slot_mapping [T]; an FP8
    cache stores value / scale (per-tensor k_scale, v_scale: float32 [1]; fp8_kv.py)."""
    if is_fp8(k_cache):
        store_fp8(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
        return
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
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of q [T, Hq, D] over each sequence's paged history -> [T, Hq, D].

    The new tokens' K/V must already be in the cache (store_kvcache). When k, v [T, Hkv, D] of the new tokens
    are also given, a sequence with no earlier history attends to them directly instead of gathering blocks.
    Single-token sequences (decodes) are batched into one SDPA call, also inside a mixed prefill batch.
    An FP8 cache is read back through its per-tensor scales (and always read: a prompt then sees the same
    rounded K/V whether it was just computed or came from the prefix cache).
    """
    kv_scales: KVScales = (k_scale, v_scale) if is_fp8(k_cache) else None
    if kv_scales is not None:
        k = v = None
    if attn.is_decode:
        return _decode_attention(q, k_cache, v_cache, attn.block_tables, attn.context_lens, attn.context_lens_cpu,
                                 scale, kv_scales)  # fmt: skip
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
                q[start : start + q_len], k_cache, v_cache, attn.block_tables[b], ctx_len, scale, new_kv, kv_scales
            )
        start += q_len
    if decodes:
        rows = torch.tensor(decode_rows, device=q.device)
        seqs = torch.tensor(decodes, device=q.device)
        out[rows] = _decode_attention(
            q[rows], k_cache, v_cache, attn.block_tables.index_select(0, seqs), attn.context_lens.index_select(0, seqs),
            [attn.context_lens_cpu[b] for b in decodes], scale, kv_scales,
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
    kv_scales: KVScales = None,
) -> torch.Tensor:
    """One sequence: q [n, Hq, D] are the last n of its ctx_len positions -> [n, Hq, D]."""
    k_scale, v_scale = kv_scales or (None, None)
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
        dequantize_kv(kb.transpose(0, 1).unsqueeze(0), k_scale, q.dtype),
        dequantize_kv(vb.transpose(0, 1).unsqueeze(0), v_scale, q.dtype),
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
    kv_scales: KVScales = None,
) -> torch.Tensor:
    """One query token per sequence. On the CPU with a float32 cache, the native kernel reads each history in
    place (cpu_native.cpp paged_decode: 2-4x faster than gathering it for SDPA); else the torch path."""
    if kv_scales is None and q.device.type == "cpu" and q.dtype == k_cache.dtype == torch.float32 \
            and k_cache.is_contiguous() and v_cache.is_contiguous():
        native = cpu_native.ops()
        if native is not None:
            return native.paged_decode(q, k_cache, v_cache, block_tables, context_lens, scale)
    return _gathered_decode_attention(q, k_cache, v_cache, block_tables, context_lens, context_lens_cpu, scale,
                                      kv_scales)


def _gathered_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    context_lens_cpu: list[int],
    scale: float,
    kv_scales: KVScales = None,
) -> torch.Tensor:
    """One query token per sequence, over groups of sequences of similar length (sorted, cache-sized)."""
    num_seqs = q.shape[0]
    if num_seqs == 1:
        return _decode_group(q, k_cache, v_cache, block_tables, context_lens, context_lens_cpu[0], scale, True,
                             kv_scales)  # fmt: skip
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
            scale, lens[start] == lens[end - 1], kv_scales,
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
    kv_scales: KVScales = None,
) -> torch.Tensor:
    """Gather the group's histories once, pad to the longest, mask (unless all equal), one SDPA call."""
    k_scale, v_scale = kv_scales or (None, None)
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
        dequantize_kv(kb, k_scale, q.dtype),
        dequantize_kv(vb, v_scale, q.dtype),
        attn_mask=mask,
        scale=scale,
        enable_gqa=True,
    )
    return out.view_as(q)

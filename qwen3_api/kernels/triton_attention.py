"""Attention over the paged KV cache in Triton, for the CUDA path: store_kvcache, prefill and decode.

Layout (docs/CONTRACTS.md): k_cache, v_cache [num_blocks, block_size, Hkv, D]; token t of a sequence lives in
block block_tables[b, t // block_size] at offset t % block_size. Every kernel gathers KV tiles through the
block table, so BLOCK_N need not equal the cache's block size.

* ``prefill`` (any batch, including chunked prefill over a cached prefix and decode rows mixed in): one program
  per (query tile, sequence, query head); query i of a sequence with context C and query length Q sits at
  position C - Q + i and sees keys 0..C-Q+i (causal with offset). Online softmax in float32, exp2.
* ``decode`` (every sequence has one query): the G = Hq/Hkv query heads sharing a KV head are packed into the
  rows of one tile, so each KV tile is read once per KV head, not once per query head (GQA). The history is
  cut into ``num_splits`` ranges processed in parallel (flash-decoding) and merged by a second small kernel:
  with one sequence and 4 KV heads there would otherwise be only 4 programs on a 132-SM GPU. The split count
  depends on the batch size only, so a CUDA graph captured for a batch bucket serves every context length.

Why Triton rather than FlexAttention with paged block masks: FlexAttention (torch >= 2.5) can express the
paged cache with a BlockMask plus a page-table ``score_mod``/gather, but it needs torch.compile for every
shape family, rebuilds the BlockMask whenever the block tables change (every step in a serving engine), and
its decode path does not pack GQA heads or split the KV dimension, which is what single-stream decode on a
132-SM GPU needs. Hand-written Triton keeps the block-table gather in the kernel, needs no per-step mask
construction, is CUDA-graph friendly and also runs under TRITON_INTERPRET=1 on CPU for CI. This choice is a
design argument, not yet a measurement: the H200 comparison is pending (see benchmarks/gpu_decode.py).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.kernels.triton_fp8 import to_fp8_grid
from qwen3_api.kernels.triton_utils import interpreting

_LOG2E = 1.4426950408889634


@triton.jit
def _store_kvcache_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, k_scale_ptr, v_scale_ptr,
    stride_kt, stride_vt, stride_ct,
    ROW: tl.constexpr, BLOCK: tl.constexpr, KV_FP8: tl.constexpr,
):  # fmt: skip
    """Copy one token's Hkv*D K and V values to its slot; a negative slot (CUDA-graph padding) is skipped.
    KV_FP8: the cache stores value / scale on the float8_e4m3fn grid (saturating; fp8_kv.py)."""
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot < 0:
        return
    offs = tl.arange(0, BLOCK)
    mask = offs < ROW
    k = tl.load(k_ptr + t * stride_kt + offs, mask=mask)
    v = tl.load(v_ptr + t * stride_vt + offs, mask=mask)
    if KV_FP8:
        k = to_fp8_grid(k.to(tl.float32) / tl.load(k_scale_ptr))
        v = to_fp8_grid(v.to(tl.float32) / tl.load(v_scale_ptr))
    tl.store(k_cache_ptr + slot * stride_ct + offs, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + slot * stride_ct + offs, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


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
    """Write k, v [T, Hkv, D] into the paged caches at slot_mapping [T] (slots < 0 are skipped); an FP8 cache
    stores value / scale (k_scale, v_scale: float32 [1] on the device; without them, 1)."""
    num_tokens = k.shape[0]
    if num_tokens == 0:
        return
    row = k_cache.shape[2] * k_cache.shape[3]
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("store_kvcache needs contiguous caches [num_blocks, block_size, Hkv, D]")
    # Rows may be strided views of a fused qkv projection; only the inner [Hkv, D] must be dense.
    k = k if k.stride(2) == 1 and k.stride(1) == k.shape[2] else k.contiguous()
    v = v if v.stride(2) == 1 and v.stride(1) == v.shape[2] else v.contiguous()
    k_scale, v_scale, kv_fp8 = _kv_scales(k_cache, k_scale, v_scale)
    _store_kvcache_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale, k.stride(0), v.stride(0), row,
        ROW=row, BLOCK=triton.next_power_of_2(row), KV_FP8=kv_fp8,
    )  # fmt: skip


def _kv_scales(
    cache: torch.Tensor, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(k_scale, v_scale, whether the cache is FP8): scales of 1 stand in for missing ones (allocated here, so
    graph-captured callers pass their own, as the model does)."""
    kv_fp8 = cache.dtype == torch.float8_e4m3fn
    one = None if k_scale is not None and v_scale is not None else torch.ones(1, device=cache.device)
    return (k_scale if k_scale is not None else one), (v_scale if v_scale is not None else one), kv_fp8


@triton.jit
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, o_ptr,
    cu_seqlens_ptr, context_lens_ptr, block_tables_ptr, k_scale_ptr, v_scale_ptr,
    sm_scale_log2,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_cb, stride_cs, stride_ch, stride_bt,
    BLOCK_SIZE: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    KV_FP8: tl.constexpr,
):  # fmt: skip
    """Causal attention of one query tile of one sequence and one query head over the paged history."""
    pid_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    kv_head = head // GROUP
    q_start = tl.load(cu_seqlens_ptr + seq)
    q_len = tl.load(cu_seqlens_ptr + seq + 1) - q_start
    if pid_m * BLOCK_M >= q_len:
        return
    ctx = tl.load(context_lens_ptr + seq)
    offset = ctx - q_len

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < q_len
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(
        q_ptr + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :], mask=m_mask[:, None]
    )
    q_pos = offset + offs_m
    if DOT_F32:
        q = q.to(tl.float32)
    if KV_FP8:  # K = cache * k_scale: the scale joins the softmax scale
        sm_scale_log2 = sm_scale_log2 * tl.load(k_scale_ptr)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    # The last query of this tile sees keys up to offset + its index: later keys are never loaded.
    kv_end = tl.minimum(offset + (pid_m + 1) * BLOCK_M, ctx)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for start in range(0, kv_end, BLOCK_N):
        kv_pos = start + tl.arange(0, BLOCK_N)
        kv_mask = kv_pos < kv_end
        block = tl.load(table + kv_pos // BLOCK_SIZE, mask=kv_mask, other=0).to(tl.int64)
        base = block * stride_cb + (kv_pos % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
        k = tl.load(k_cache_ptr + base[None, :] + offs_d[:, None], mask=kv_mask[None, :], other=0.0)
        if KV_FP8:
            k = k.to(q_ptr.dtype.element_ty)
        if DOT_F32:
            k = k.to(tl.float32)
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * sm_scale_log2
        visible = (kv_pos[None, :] <= q_pos[:, None]) & kv_mask[None, :]
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # Rows with nothing visible yet keep m = -inf; subtracting a finite stand-in avoids inf - inf.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + base[:, None] + offs_d[None, :], mask=kv_mask[:, None], other=0.0)
        # P is rounded to the cache dtype as on the GPU (FlashAttention does the same) before P.V; with an FP8
        # cache, to the query dtype (FP8 is the cache's storage only), V upcast alike.
        if KV_FP8:
            p = p.to(q_ptr.dtype.element_ty)
            v = v.to(q_ptr.dtype.element_ty)
        else:
            p = p.to(v_cache_ptr.dtype.element_ty)
        if DOT_F32:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PRECISION)
        m_i = m_new
    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    if KV_FP8:
        acc = acc * tl.load(v_scale_ptr)
    o_rows = (q_start + offs_m).to(tl.int64)
    tl.store(o_ptr + o_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             acc.to(o_ptr.dtype.element_ty), mask=m_mask[:, None])  # fmt: skip


@triton.jit
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, part_o_ptr, part_ml_ptr,
    context_lens_ptr, block_tables_ptr, k_scale_ptr, v_scale_ptr,
    sm_scale_log2,
    stride_qt, stride_qh,
    stride_cb, stride_cs, stride_ch, stride_bt,
    NUM_SPLITS: tl.constexpr, BLOCK_SIZE: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    KV_FP8: tl.constexpr,
):  # fmt: skip
    """Partial attention of the G query heads of one KV head of one sequence over one range of its history.

    Writes the unnormalised output and (max, sum) of the range to the partial buffers, merged later.
    """
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    num_kv_heads = tl.num_programs(1)
    ctx = tl.load(context_lens_ptr + seq)
    per_split = tl.cdiv(tl.cdiv(ctx, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * per_split
    hi = tl.minimum(lo + per_split, ctx)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    g_mask = offs_g < GROUP
    heads = kv_head * GROUP + offs_g
    q = tl.load(q_ptr + seq.to(tl.int64) * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None], other=0.0)  # fmt: skip
    if DOT_F32:
        q = q.to(tl.float32)
    if KV_FP8:  # K = cache * k_scale: the scale joins the softmax scale
        sm_scale_log2 = sm_scale_log2 * tl.load(k_scale_ptr)

    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, HEAD_DIM), dtype=tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for start in range(lo, hi, BLOCK_N):
        kv_pos = start + tl.arange(0, BLOCK_N)
        kv_mask = kv_pos < hi
        block = tl.load(table + kv_pos // BLOCK_SIZE, mask=kv_mask, other=0).to(tl.int64)
        base = block * stride_cb + (kv_pos % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
        k = tl.load(k_cache_ptr + base[None, :] + offs_d[:, None], mask=kv_mask[None, :], other=0.0)
        if KV_FP8:
            k = k.to(q_ptr.dtype.element_ty)
        if DOT_F32:
            k = k.to(tl.float32)
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * sm_scale_log2
        s = tl.where(kv_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + base[:, None] + offs_d[None, :], mask=kv_mask[:, None], other=0.0)
        # P is rounded to the cache dtype as on the GPU (FlashAttention does the same) before P.V; with an FP8
        # cache, to the query dtype (FP8 is the cache's storage only), V upcast alike.
        if KV_FP8:
            p = p.to(q_ptr.dtype.element_ty)
            v = v.to(q_ptr.dtype.element_ty)
        else:
            p = p.to(v_cache_ptr.dtype.element_ty)
        if DOT_F32:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PRECISION)
        m_i = m_new

    if KV_FP8:  # V = cache * v_scale (linear: the merge's weights are unchanged)
        acc = acc * tl.load(v_scale_ptr)
    # partial buffers: o [B, Hq, S, D] float32, ml [B, Hq, S, 2] float32
    row = (seq.to(tl.int64) * num_kv_heads * GROUP + heads) * NUM_SPLITS + split
    tl.store(part_o_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=g_mask[:, None])
    tl.store(part_ml_ptr + row * 2, m_i, mask=g_mask)
    tl.store(part_ml_ptr + row * 2 + 1, l_i, mask=g_mask)


@triton.jit
def _decode_merge_kernel(
    part_o_ptr, part_ml_ptr, o_ptr, stride_ot, stride_oh,
    NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    """out[seq, head] = sum_s exp2(m_s - M) acc_s / sum_s exp2(m_s - M) l_s over the splits of one row."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    num_heads = tl.num_programs(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    s_mask = offs_s < NUM_SPLITS
    row = (seq.to(tl.int64) * num_heads + head) * NUM_SPLITS + offs_s
    m = tl.load(part_ml_ptr + row * 2, mask=s_mask, other=float("-inf"))
    l_part = tl.load(part_ml_ptr + row * 2 + 1, mask=s_mask, other=0.0)
    m_max = tl.max(m, 0)
    # A sequence with no history at all (CUDA-graph padding rows) has every m = -inf: output zeros.
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.math.exp2(m - m_max)
    acc = tl.load(part_o_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], mask=s_mask[:, None], other=0.0)
    total = tl.sum(w * l_part, 0)
    out = tl.sum(acc * w[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(o_ptr + seq.to(tl.int64) * stride_ot + head * stride_oh + offs_d,
             out.to(o_ptr.dtype.element_ty))  # fmt: skip


@functools.cache
def _num_sms() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 4


def default_num_splits(num_seqs: int, num_kv_heads: int, num_sms: int | None = None) -> int:
    """KV splits for decode so that sequences x KV heads x splits fills the GPU about twice: a power of two
    in 1..32 (few kernel variants to compile).

    Depends on the batch size only (not on context lengths), so a captured CUDA graph stays valid.
    """
    num_sms = num_sms or _num_sms()
    wanted = max(1, min(32, triton.cdiv(2 * num_sms, max(1, num_seqs * num_kv_heads))))
    return 1 << (wanted.bit_length() - 1)


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 runs must match the CPU float32 path token for token: no TF32 rounding.
    return "ieee" if dtype == torch.float32 else "tf32"


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_query_len: int,
    scale: float,
    block_m: int = 64,
    block_n: int = 64,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention for a flat batch of variable-length queries over their paged histories (an FP8 cache
    read through its per-tensor scales)."""
    q = q if q.stride(-1) == 1 else q.contiguous()
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    out = torch.empty_like(q)
    num_seqs = cu_seqlens_q.numel() - 1
    if num_tokens == 0 or num_seqs == 0:
        return out
    block_m = max(16, min(block_m, triton.next_power_of_2(max_query_len)))
    grid = (triton.cdiv(max_query_len, block_m), num_seqs, num_heads)
    k_scale, v_scale, kv_fp8 = _kv_scales(k_cache, k_scale, v_scale)
    _prefill_kernel[grid](
        q, k_cache, v_cache, out, cu_seqlens_q, context_lens, block_tables, k_scale, v_scale,
        scale * _LOG2E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        BLOCK_SIZE=k_cache.shape[1], GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim,
        BLOCK_M=block_m, BLOCK_N=block_n, DOT_PRECISION=_dot_precision(q.dtype), DOT_F32=interpreting(),
        KV_FP8=kv_fp8,
    )  # fmt: skip
    return out


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
    block_n: int = 64,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """One query per sequence (q [B, Hq, D]) over its paged history, split-KV with GQA head packing (an FP8
    cache read through its per-tensor scales)."""
    q = q if q.stride(-1) == 1 else q.contiguous()
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.empty_like(q)
    if num_seqs == 0:
        return out
    splits = num_splits or default_num_splits(num_seqs, num_kv_heads)
    part_o = torch.empty(num_seqs, num_heads, splits, head_dim, dtype=torch.float32, device=q.device)
    part_ml = torch.empty(num_seqs, num_heads, splits, 2, dtype=torch.float32, device=q.device)
    k_scale, v_scale, kv_fp8 = _kv_scales(k_cache, k_scale, v_scale)
    _decode_split_kernel[(num_seqs, num_kv_heads, splits)](
        q, k_cache, v_cache, part_o, part_ml, context_lens, block_tables, k_scale, v_scale,
        scale * _LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        NUM_SPLITS=splits, BLOCK_SIZE=k_cache.shape[1], GROUP=group, HEAD_DIM=head_dim,
        BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n,
        DOT_PRECISION=_dot_precision(q.dtype), DOT_F32=interpreting(), KV_FP8=kv_fp8,
    )  # fmt: skip
    _decode_merge_kernel[(num_seqs, num_heads)](
        part_o, part_ml, out, out.stride(0), out.stride(1),
        NUM_SPLITS=splits, BLOCK_S=max(2, triton.next_power_of_2(splits)), HEAD_DIM=head_dim,
    )  # fmt: skip
    return out


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
    """Causal attention of q [T, Hq, D] over each sequence's paged history (new K/V already stored; the
    contract's optional k=, v= of the new tokens are not needed: the kernels read the cache). An FP8 cache is
    read through its per-tensor k_scale, v_scale."""
    scales = {"k_scale": k_scale, "v_scale": v_scale}
    if attn.is_decode:
        return decode_attention(q, k_cache, v_cache, attn.context_lens, attn.block_tables, scale, **scales)
    return prefill_attention(
        q,
        k_cache,
        v_cache,
        attn.cu_seqlens_q,
        attn.context_lens,
        attn.block_tables,
        attn.max_query_len,
        scale,
        **scales,
    )

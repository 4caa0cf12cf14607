"""Triton paged attention and store_kvcache vs dense softmax attention over the gathered history (interpreter)."""

from __future__ import annotations

import math

import pytest
import torch

from qwen3_api.kernels import torch_attention
from qwen3_api.kernels import triton_attention as ta
from qwen3_api.kernels.metadata import AttentionMetadata

BLOCK = 16


def reference_attention(q, k_hist, v_hist, q_len, ctx, scale):
    """Dense softmax attention in float64: query i sits at position ctx - q_len + i (causal with offset)."""
    group = q.shape[1] // k_hist.shape[1]
    k = k_hist.double().repeat_interleave(group, dim=1)  # [ctx, Hq, D]
    v = v_hist.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * scale
    pos = torch.arange(ctx - q_len, ctx)[:, None]
    scores = scores.masked_fill(torch.arange(ctx)[None, :] > pos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def scattered_batch(query_lens, context_lens, hq, hkv, d, dtype, seed=0):
    """A batch whose sequences own shuffled, interleaved cache blocks, with random history already stored."""
    g = torch.Generator().manual_seed(seed)
    needs = [math.ceil(c / BLOCK) for c in context_lens]
    num_blocks = sum(needs) + 3
    perm = torch.randperm(num_blocks, generator=g).tolist()
    tables, used = [], 0
    for n in needs:
        tables.append(perm[used : used + n])
        used += n
    k_cache = torch.randn(num_blocks, BLOCK, hkv, d, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, BLOCK, hkv, d, generator=g).to(dtype)
    attn = AttentionMetadata.build(query_lens, context_lens, tables, BLOCK, "cpu")
    q = torch.randn(sum(query_lens), hq, d, generator=g).to(dtype)
    return q, k_cache, v_cache, attn, tables


def history(cache, table, ctx):
    return cache[torch.tensor(table)].flatten(0, 1)[:ctx]


def check_against_reference(out, q, k_cache, v_cache, attn, tables, scale, rtol, atol):
    start = 0
    for b, (q_len, ctx) in enumerate(zip(attn.query_lens_cpu, attn.context_lens_cpu, strict=True)):
        ref = reference_attention(
            q[start : start + q_len],
            history(k_cache, tables[b], ctx),
            history(v_cache, tables[b], ctx),
            q_len,
            ctx,
            scale,
        )
        torch.testing.assert_close(out[start : start + q_len].double(), ref, rtol=rtol, atol=atol)
        start += q_len


@pytest.mark.parametrize(
    "query_lens,context_lens,hq,hkv,d",
    [
        ([5, 16, 1], [5, 16, 1], 4, 2, 16),  # fresh prefills, GQA 2
        ([7, 3, 1], [40, 19, 33], 4, 1, 32),  # chunked prefill over cached prefixes + a decode row, MQA
        ([12], [12], 2, 2, 16),  # plain MHA
    ],
)
def test_prefill_fp32_matches_dense_reference(query_lens, context_lens, hq, hkv, d):
    q, kc, vc, attn, tables = scattered_batch(query_lens, context_lens, hq, hkv, d, torch.float32)
    scale = d**-0.5
    out = ta.paged_attention(q, kc, vc, attn, scale)
    check_against_reference(out, q, kc, vc, attn, tables, scale, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, torch_attention.paged_attention(q, kc, vc, attn, scale), rtol=1e-5, atol=1e-5)


def test_prefill_tiles_smaller_than_the_query():
    q, kc, vc, attn, tables = scattered_batch([20, 9], [37, 9], 2, 1, 16, torch.float32, seed=4)
    out = ta.prefill_attention(
        q, kc, vc, attn.cu_seqlens_q, attn.context_lens, attn.block_tables, attn.max_query_len, 0.25,
        block_m=16, block_n=16,
    )  # fmt: skip
    check_against_reference(out, q, kc, vc, attn, tables, 0.25, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_fp32_matches_dense_reference(num_splits):
    context_lens = [1, 17, 40, 64]
    q, kc, vc, attn, tables = scattered_batch([1] * 4, context_lens, 8, 2, 16, torch.float32, seed=2)
    assert attn.is_decode
    out = ta.decode_attention(
        q, kc, vc, attn.context_lens, attn.block_tables, 0.3, num_splits=num_splits, block_n=16
    )
    check_against_reference(out, q, kc, vc, attn, tables, 0.3, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, torch_attention.paged_attention(q, kc, vc, attn, 0.3), rtol=1e-5, atol=1e-5)


def test_decode_padding_row_with_empty_history_gives_zeros():
    q, kc, vc, attn, tables = scattered_batch([1, 1], [5, 9], 4, 2, 16, torch.float32, seed=5)
    lens = attn.context_lens.clone()
    lens[1] = 0  # a CUDA-graph padding row
    out = ta.decode_attention(q, kc, vc, lens, attn.block_tables, 0.25, num_splits=2, block_n=16)
    assert torch.isfinite(out).all() and (out[1] == 0).all()
    ref = reference_attention(q[:1], history(kc, tables[0], 5), history(vc, tables[0], 5), 1, 5, 0.25)
    torch.testing.assert_close(out[:1].double(), ref, rtol=1e-5, atol=1e-5)


def test_bf16_prefill_and_decode_within_bf16_rounding():
    # bf16 q/K/V, float32 softmax and accumulation; P is rounded to bf16 before P.V and the output to bf16,
    # each a relative 2^-8 (0.4 %) step, so 2e-2 bounds the error with margin on O(1) outputs.
    q, kc, vc, attn, tables = scattered_batch([6, 1], [22, 30], 4, 2, 32, torch.bfloat16, seed=6)
    out = ta.paged_attention(q, kc, vc, attn, 32**-0.5)
    assert out.dtype == torch.bfloat16
    check_against_reference(out, q, kc, vc, attn, tables, 32**-0.5, rtol=2e-2, atol=2e-2)
    dq, dkc, dvc, dattn, dtables = scattered_batch([1, 1, 1], [3, 18, 50], 4, 2, 32, torch.bfloat16, seed=7)
    dout = ta.paged_attention(dq, dkc, dvc, dattn, 32**-0.5)
    check_against_reference(dout, dq, dkc, dvc, dattn, dtables, 32**-0.5, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_kvcache_writes_slots_and_skips_negative(dtype):
    g = torch.Generator().manual_seed(8)
    kc = torch.zeros(4, BLOCK, 2, 16, dtype=dtype)
    vc = torch.zeros_like(kc)
    fused = torch.randn(5, 3, 2, 16, generator=g).to(dtype)  # a strided view, like a fused qkv output
    k, v = fused[:, 1], fused[:, 2]
    slots = torch.tensor([0, 17, 63, -1, 33])
    ta.store_kvcache(k, v, kc, vc, slots)
    ref_k, ref_v = torch.zeros_like(kc), torch.zeros_like(vc)
    keep = slots >= 0
    torch_attention.store_kvcache(k[keep], v[keep], ref_k, ref_v, slots[keep])
    assert torch.equal(kc, ref_k) and torch.equal(vc, ref_v)
    assert torch.equal(kc.view(-1, 2, 16)[17], k[1])
    assert int((kc != 0).any(-1).any(-1).sum()) == 4  # the -1 slot wrote nothing


def test_default_splits_are_powers_of_two_that_shrink_with_the_batch():
    splits = [ta.default_num_splits(b, 4, num_sms=132) for b in (1, 2, 3, 8, 16, 64, 128)]
    assert splits == sorted(splits, reverse=True) and splits[0] == 32 and splits[-1] == 1
    assert all(s & (s - 1) == 0 for s in splits)

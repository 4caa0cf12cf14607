"""The torch kernels against naive references: routed-only MoE, paged attention over scattered blocks."""

from __future__ import annotations

import math

import pytest
import torch

from qwen3_api.kernels import cpu_native, select_kernels, torch_attention, torch_linear, torch_moe
from qwen3_api.kernels.metadata import AttentionMetadata
from tests.model.helpers import native_cpu_ops, transposed_copy


def _naive_moe(hidden, w13, w2, weights, ids):
    out = torch.zeros_like(hidden)
    inter = w2.shape[-1]
    for t in range(hidden.shape[0]):
        for k in range(ids.shape[1]):
            e = int(ids[t, k])
            gate_up = w13[e] @ hidden[t]
            out[t] += weights[t, k] * (w2[e] @ (torch.nn.functional.silu(gate_up[:inter]) * gate_up[inter:]))
    return out


@pytest.mark.parametrize("native", [False, True])  # the native one-token step (cpu_native.cpp), or torch only
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("gather_bytes", [0, 1 << 30])  # the expert loop, and the gathered-bmm path
@pytest.mark.parametrize("num_tokens", [1, 2, 7, 40])  # 1, 2: pair by pair (PER_PAIR_MAX)
def test_fused_moe_matches_naive_and_ignores_unrouted_experts(gather_bytes, num_tokens, transposed, native,
                                                              monkeypatch) -> None:  # fmt: skip
    monkeypatch.setattr(torch_moe, "GATHER_BYTES", gather_bytes)
    per_pair_calls: list[int] = []
    real_per_pair = torch_moe._per_pair_moe
    monkeypatch.setattr(torch_moe, "_per_pair_moe", lambda *a: per_pair_calls.append(1) or real_per_pair(*a))
    native_calls: list[int] = []
    real_ops = native_cpu_ops() if native else None

    class _Ops:
        linear_t = getattr(real_ops, "linear_t", None)

        def moe_decode(self, *args):
            native_calls.append(1)
            return real_ops.moe_decode(*args)

    monkeypatch.setattr(cpu_native, "ops", (lambda: _Ops()) if native else (lambda: None))
    gen = torch.Generator().manual_seed(num_tokens)
    experts, hidden_size, inter, top_k = 16, 24, 12, 3
    hidden = torch.randn(num_tokens, hidden_size, generator=gen)
    w13 = torch.randn(experts, 2 * inter, hidden_size, generator=gen) / 5
    w2 = torch.randn(experts, hidden_size, inter, generator=gen) / 4
    # route to experts 0..7 only; poison 8..15 so computing them (even times a zero weight) would show
    ids = torch.stack([torch.randperm(8, generator=gen)[:top_k] for _ in range(num_tokens)])
    weights = torch.rand(num_tokens, top_k, generator=gen)
    w13[8:] = float("nan")
    w2[8:] = float("nan")
    if transposed:
        w13, w2 = transposed_copy(w13), transposed_copy(w2)
    got = torch_moe.fused_moe(hidden, w13, w2, weights, ids)
    one_token_step = num_tokens * top_k <= torch_moe.PER_PAIR_MAX
    assert bool(native_calls) == (native and transposed and one_token_step)
    assert bool(per_pair_calls) == (gather_bytes == 0 and one_token_step and not native_calls)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, _naive_moe(hidden, w13, w2, weights, ids), atol=1e-5, rtol=1e-5)


def _naive_attention(q, keys, values, q_offset, scale):
    """q [n, Hq, D] at positions q_offset.., keys/values [L, Hkv, D]: causal softmax attention."""
    rep = q.shape[1] // keys.shape[1]
    k = keys.repeat_interleave(rep, dim=1)
    v = values.repeat_interleave(rep, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    qpos = torch.arange(q.shape[0])[:, None] + q_offset
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > qpos, -math.inf)
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def _scattered_batch(query_lens, context_lens, block_size=4, heads=6, kv_heads=2, dim=8, seed=0):
    """Sequences whose blocks are shuffled across the cache, full histories stored, metadata built."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-c // block_size) for c in context_lens]
    perm = torch.randperm(sum(needed) + 5, generator=gen).tolist()
    tables, start = [], 0
    for n in needed:
        tables.append(perm[start : start + n])
        start += n
    k_cache = torch.zeros(len(perm), block_size, kv_heads, dim)
    v_cache = torch.zeros_like(k_cache)
    histories = []
    for c, table in zip(context_lens, tables, strict=True):
        keys, values = torch.randn(c, kv_heads, dim, generator=gen), torch.randn(c, kv_heads, dim, generator=gen)
        for pos in range(c):
            k_cache[table[pos // block_size], pos % block_size] = keys[pos]
            v_cache[table[pos // block_size], pos % block_size] = values[pos]
        histories.append((keys, values))
    attn = AttentionMetadata.build(query_lens, context_lens, tables, block_size, "cpu")
    q = torch.randn(sum(query_lens), heads, dim, generator=gen)
    return q, k_cache, v_cache, attn, histories


@pytest.mark.parametrize(
    ("query_lens", "context_lens"),
    [([5, 1, 9], [5, 1, 9]), ([3, 4, 2], [10, 4, 7]), ([1, 1, 1, 1], [1, 9, 16, 33])],
)
def test_paged_attention_matches_naive(query_lens, context_lens) -> None:
    q, k_cache, v_cache, attn, histories = _scattered_batch(query_lens, context_lens)
    scale = 0.3
    expected = torch.cat([
        _naive_attention(qs, keys, values, c - n, scale)
        for qs, (keys, values), n, c in zip(q.split(query_lens), histories, query_lens, context_lens, strict=True)
    ])  # fmt: skip
    assert attn.is_decode == all(n == 1 for n in query_lens)
    got = torch_attention.paged_attention(q, k_cache, v_cache, attn, scale)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the fast path for sequences without earlier history reads the new k/v directly: same result
    new_k = torch.cat([keys[c - n :] for (keys, _), n, c in zip(histories, query_lens, context_lens, strict=True)])
    new_v = torch.cat([vals[c - n :] for (_, vals), n, c in zip(histories, query_lens, context_lens, strict=True)])
    fast = torch_attention.paged_attention(q, k_cache, v_cache, attn, scale, k=new_k, v=new_v)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)


def test_store_kvcache_writes_the_slots() -> None:
    k_cache = torch.zeros(4, 2, 1, 3)
    v_cache = torch.zeros_like(k_cache)
    k, v = torch.randn(3, 1, 3), torch.randn(3, 1, 3)
    torch_attention.store_kvcache(k, v, k_cache, v_cache, torch.tensor([7, 0, 3]))
    assert torch.equal(k_cache[3, 1], k[0]) and torch.equal(k_cache[0, 0], k[1]) and torch.equal(v_cache[1, 1], v[2])
    assert int((k_cache != 0).any(-1).sum()) == 3


def test_cpu_gets_the_torch_kernels() -> None:
    kernels = select_kernels("cpu")
    assert kernels.name == "torch" and kernels.fused_moe is torch_moe.fused_moe


def test_mixed_batch_with_several_decodes_matches_naive() -> None:
    """Prefill chunks, a fresh prompt and three decodes in one flat batch (the decodes share one SDPA call)."""
    query_lens, context_lens = [1, 6, 1, 3, 1, 4], [12, 6, 3, 9, 20, 4]
    q, k_cache, v_cache, attn, histories = _scattered_batch(query_lens, context_lens, seed=4)
    assert not attn.is_decode
    expected = torch.cat([
        _naive_attention(qs, keys, values, c - n, 0.5)
        for qs, (keys, values), n, c in zip(q.split(query_lens), histories, query_lens, context_lens, strict=True)
    ])  # fmt: skip
    torch.testing.assert_close(torch_attention.paged_attention(q, k_cache, v_cache, attn, 0.5), expected,
                               atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("budget", [0, 3000, 1 << 30])  # one sequence per group, several groups, one group
def test_decode_attention_in_cache_sized_groups_matches_naive(budget, monkeypatch) -> None:
    """Decodes are sorted by length and cut into groups under DECODE_GROUP_BYTES; results land in batch order."""
    monkeypatch.setattr(torch_attention.cpu_native, "ops", lambda: None)  # the gathered path, not the native one
    monkeypatch.setattr(torch_attention, "DECODE_GROUP_BYTES", budget)
    groups: list[int] = []
    real_group = torch_attention._decode_group
    monkeypatch.setattr(torch_attention, "_decode_group", lambda q, *a: groups.append(q.shape[0]) or real_group(q, *a))
    context_lens = [9, 33, 2, 17, 17, 5, 40, 9, 26, 1]
    query_lens = [1] * len(context_lens)
    q, k_cache, v_cache, attn, histories = _scattered_batch(query_lens, context_lens, seed=7)
    expected = torch.cat([
        _naive_attention(qs, keys, values, c - 1, 0.4)
        for qs, (keys, values), c in zip(q.split(query_lens), histories, context_lens, strict=True)
    ])  # fmt: skip
    got = torch_attention.paged_attention(q, k_cache, v_cache, attn, 0.4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert sum(groups) == len(context_lens)
    if budget == 0:
        assert groups == [1] * len(context_lens)
    elif budget == 3000:
        assert 1 < len(groups) < len(context_lens)
    else:
        assert groups == [len(context_lens)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [0, 1, 2, 37])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_f_linear(dtype, rows, transposed, bias) -> None:
    """The CPU linear (native or MKL for one row, oneDNN for several in float32) is F.linear for every layout and
    shape."""
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(48, 40, generator=gen).to(dtype)
    if transposed:
        weight = transposed_copy(weight)
    b = torch.randn(48, generator=gen).to(dtype) if bias else None
    x = torch.randn(rows, 80, generator=gen).to(dtype)[:, ::2]  # strided input, as q.reshape / slices give
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(torch_linear.linear(x, weight, b), torch.nn.functional.linear(x, weight, b), **tol)
    x3 = torch.randn(3, rows, 40, generator=gen).to(dtype)
    torch.testing.assert_close(torch_linear.linear(x3, weight, b), torch.nn.functional.linear(x3, weight, b), **tol)


def test_weight_layout_is_transposed_for_cpu_float32_only() -> None:
    assert torch_linear.transposed_weights("cpu", torch.float32)
    assert torch_linear.transposed_weights(None, torch.float32)
    assert not torch_linear.transposed_weights("cpu", torch.bfloat16)
    assert not torch_linear.transposed_weights("meta", torch.float32)
    assert not torch_linear.transposed_weights("cuda", torch.float32)

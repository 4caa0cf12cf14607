"""The FP8 KV cache (float8_e4m3fn, per-tensor scales): the Triton store and attention (interpreter) against the
torch kernels, which read it back through fp8_kv.py, and both against attention over the dequantized cache."""

from __future__ import annotations

import pytest
import torch

from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels import torch_attention, torch_kernels, triton_attention
from qwen3_api.kernels.metadata import AttentionMetadata
from tests.kernels.helpers import tiny_model, triton_kernels

FP8 = torch.float8_e4m3fn
BS = 16


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_triton_store_writes_the_same_bytes_as_torch_and_saturates():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(5, 2, 16, generator=g) * 3
    v = torch.randn(5, 2, 16, generator=g)
    k[0, 0, :4] = torch.tensor([1e4, -1e4, 900.0, 0.5])  # beyond 448 * scale: saturate, never NaN
    k_scale, v_scale = torch.tensor([0.5]), torch.tensor([0.01])
    slots = torch.tensor([3, 17, 0, 40, 9])
    caches = [[torch.zeros(4, BS, 2, 16, dtype=FP8) for _ in range(2)] for _ in range(2)]
    torch_attention.store_kvcache(k, v, *caches[0], slots, k_scale=k_scale, v_scale=v_scale)
    triton_attention.store_kvcache(k, v, *caches[1], slots, k_scale=k_scale, v_scale=v_scale)
    for ref, got in zip(caches[0], caches[1], strict=True):
        assert not torch.isnan(got.float()).any()
        same = (ref.float() == got.float()) & (
            (ref.float() == 0) | (ref.view(torch.uint8) == got.view(torch.uint8))
        )
        assert same.all()
    stored_k = caches[1][0].view(-1, 2, 16)[3].float() * k_scale
    assert stored_k[0, 0] == 448 * 0.5 and stored_k[0, 1] == -448 * 0.5  # saturated at the largest value
    torch.testing.assert_close(caches[1][1].view(-1, 2, 16)[slots].float() * v_scale, v, rtol=0.07, atol=1e-3)
    # CUDA-graph padding rows (slot -1) write nothing
    before = caches[1][0].clone()
    triton_attention.store_kvcache(
        k[:1], v[:1], *caches[1], torch.tensor([-1]), k_scale=k_scale, v_scale=v_scale
    )
    assert torch.equal(before.view(torch.uint8), caches[1][0].view(torch.uint8))


def fp8_cache(
    num_blocks: int, hkv: int, d: int, scale: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random FP8 cache and the float32 values it stands for (cache * scale)."""
    g = torch.Generator().manual_seed(seed)
    cache = (torch.randn(num_blocks, BS, hkv, d, generator=g) * 2).to(FP8)
    return cache, cache.float() * scale


@pytest.mark.parametrize("name,query_lens,context_lens", [
    ("decode", [1, 1, 1], [3, 40, 70]),
    ("chunked prefill with a decode", [7, 1, 12], [30, 9, 12]),
])  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_over_an_fp8_cache_equals_attention_over_its_dequantized_values(
    name, query_lens, context_lens, dtype
):
    hq, hkv, d = 4, 2, 16
    needs = [-(-c // BS) for c in context_lens]
    perm = torch.randperm(sum(needs) + 3, generator=torch.Generator().manual_seed(3)).tolist()
    tables, used = [], 0
    for n in needs:
        tables.append(perm[used : used + n])
        used += n
    k_cache, k_values = fp8_cache(sum(needs) + 3, hkv, d, 0.25, 1)
    v_cache, v_values = fp8_cache(sum(needs) + 3, hkv, d, 0.05, 2)
    scales = {"k_scale": torch.tensor([0.25]), "v_scale": torch.tensor([0.05])}
    attn = AttentionMetadata.build(query_lens, context_lens, tables, BS, "cpu")
    q = torch.randn(sum(query_lens), hq, d, generator=torch.Generator().manual_seed(4)).to(dtype)
    expected = torch_attention.paged_attention(q.float(), k_values, v_values, attn, d**-0.5)
    by_torch = torch_attention.paged_attention(q, k_cache, v_cache, attn, d**-0.5, **scales)
    by_triton = triton_attention.paged_attention(q, k_cache, v_cache, attn, d**-0.5, **scales)
    limit = 1e-5 if dtype == torch.float32 else 2e-2
    assert by_triton.dtype == dtype
    assert rel(by_torch, expected) < limit
    assert rel(by_triton, expected) < limit


def run(net, kv_dtype: torch.dtype, scales: tuple[float, float]) -> list[torch.Tensor]:
    """Prefill 9 + 5 tokens, then one decode step each, with an FP8 (or float32) cache; hidden states per step."""
    for layer in net.model.layers:
        layer.self_attn.k_scale.fill_(scales[0])
        layer.self_attn.v_scale.fill_(scales[1])
    caches = allocate_kv_cache(net.config, 8, BS, "cpu", kv_dtype)
    tables = [[0], [1]]
    g = torch.Generator().manual_seed(7)
    outs = []
    for query_lens, context_lens in (([9, 5], [9, 5]), ([1, 1], [10, 6])):
        attn = AttentionMetadata.build(query_lens, context_lens, tables, BS, "cpu")
        ids = torch.randint(0, net.config.vocab_size, (sum(query_lens),), generator=g)
        pos = torch.cat([torch.arange(c - n, c) for n, c in zip(query_lens, context_lens, strict=True)])
        outs.append(net(ids, pos, attn, caches))
    return outs


def test_the_model_with_an_fp8_cache_is_the_same_through_both_kernel_sets():
    net = tiny_model(seed=3)
    by_torch = run(net, FP8, (0.5, 0.25))
    net.kernels = triton_kernels()
    by_triton = run(net, FP8, (0.5, 0.25))
    for a, b in zip(by_torch, by_triton, strict=True):
        assert rel(b, a) < 1e-4
    # and close to the float32 cache: the FP8 rounding of K and V moves the hidden states by a few percent
    net.kernels = torch_kernels()
    exact = run(net, torch.float32, (1.0, 1.0))
    for a, b in zip(exact, by_torch, strict=True):
        assert 1e-4 < rel(b, a) < 0.1

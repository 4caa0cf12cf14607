"""The CUDA-graph decode runner's static buffers and padding, run eagerly through the Triton kernels on CPU."""

from __future__ import annotations

import copy

import torch

from qwen3_api.engine.cuda_graphs import CudaGraphDecodeRunner, default_buckets
from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels.metadata import AttentionMetadata
from tests.kernels.helpers import tiny_model, triton_kernels

BLOCK = 16


def test_default_buckets_cover_every_batch_size_up_to_the_max():
    buckets = default_buckets(100)
    assert buckets[0] == 1 and buckets[-1] == 100 and buckets == sorted(set(buckets))
    runner_sizes = [next(b for b in buckets if b >= n) for n in range(1, 101)]
    assert all(size - n < max(8, n // 4) for n, size in zip(range(1, 101), runner_sizes, strict=True))


def test_padded_static_buffer_step_matches_the_plain_forward():
    net = tiny_model(seed=2, kernels=triton_kernels())
    tables = [[4, 1], [2], [6, 0, 3]]
    context_lens = [20, 9, 37]
    caches = allocate_kv_cache(net.config, 8, BLOCK, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(3)
    for k_cache, v_cache in caches:  # a history already in the cache
        k_cache.copy_(torch.randn(k_cache.shape, generator=gen))
        v_cache.copy_(torch.randn(v_cache.shape, generator=gen))
    ids = torch.tensor([5, 77, 31])
    positions = torch.tensor([c - 1 for c in context_lens])
    attn = AttentionMetadata.build([1, 1, 1], context_lens, tables, BLOCK, "cpu")

    plain_caches = copy.deepcopy(caches)
    before = copy.deepcopy(caches)
    expected = net(ids, positions, attn, plain_caches)

    runner = CudaGraphDecodeRunner(net, caches, max_batch_size=4, max_blocks_per_seq=4, use_graphs=False)
    runner.block_tables.fill_(7)  # stale ids past each row's width must not matter
    assert runner.can_run(attn) and runner.bucket_for(3) == 4
    got = runner.run(ids, positions, attn)
    assert got.shape == (3, net.config.hidden_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Only the three new slots changed, to the same values as the plain forward (up to the rounding of a
    # batch-4 vs batch-3 matmul): the padding row wrote nothing, not even to block 0 or stale block 7.
    written = torch.zeros(8 * BLOCK, dtype=torch.bool)
    written[attn.slot_mapping] = True
    for (k, v), (pk, pv), (ok, ov) in zip(caches, plain_caches, before, strict=True):
        for new, plain, old in ((k, pk, ok), (v, pv, ov)):
            new, plain, old = new.flatten(0, 1), plain.flatten(0, 1), old.flatten(0, 1)
            assert torch.equal(new[~written], old[~written])
            assert not torch.equal(new[written], old[written])
            torch.testing.assert_close(new[written], plain[written], rtol=1e-5, atol=1e-5)

    prefill = AttentionMetadata.build([2, 1], [2, 1], [[0], [1]], BLOCK, "cpu")
    assert not runner.can_run(prefill)

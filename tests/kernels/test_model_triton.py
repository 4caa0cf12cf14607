"""The whole network through the Triton kernels matches the torch backend: prefill, chunked prefill, decode."""

from __future__ import annotations

import torch

from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels import torch_kernels
from qwen3_api.kernels.metadata import AttentionMetadata
from tests.kernels.helpers import tiny_model, triton_kernels

BLOCK = 16


def run_steps(net, steps, tables):
    """Run a list of (query_lens, context_lens, token ids) steps; return the last hidden states per step."""
    caches = allocate_kv_cache(net.config, 12, BLOCK, "cpu", torch.float32)
    outs = []
    for query_lens, context_lens, ids in steps:
        attn = AttentionMetadata.build(query_lens, context_lens, tables, BLOCK, "cpu")
        positions = torch.cat([torch.arange(c - q, c) for q, c in zip(query_lens, context_lens, strict=True)])
        outs.append(net(torch.tensor(ids), positions, attn, caches))
    return outs, caches


def test_triton_path_matches_torch_path_fp32():
    net = tiny_model(kernels=triton_kernels())
    gen = torch.Generator().manual_seed(1)
    tables = [[3, 7], [0, 5, 9], [11]]
    # step 1: fresh prefills (one sequence chunked: 10 of its 20 tokens); step 2: the rest of the chunked one
    # with a 2-token prefill and a decode mixed in; step 3: a pure decode batch.
    steps = [
        ([10, 20, 4], [10, 20, 4], torch.randint(0, 128, (34,), generator=gen).tolist()),
        ([10, 2, 1], [20, 22, 5], torch.randint(0, 128, (13,), generator=gen).tolist()),
        ([1, 1, 1], [21, 23, 6], torch.randint(0, 128, (3,), generator=gen).tolist()),
    ]
    triton_out, triton_cache = run_steps(net, steps, tables)
    net.kernels = torch_kernels()  # the same weights through the torch set
    torch_out, torch_cache = run_steps(net, steps, tables)
    for a, b in zip(triton_out, torch_out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for (tk, tv), (rk, rv) in zip(triton_cache, torch_cache, strict=True):
        torch.testing.assert_close(tk, rk, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tv, rv, rtol=1e-5, atol=1e-5)

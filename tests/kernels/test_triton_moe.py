"""Triton fused MoE vs a per-token expert loop written here and vs the torch backend (interpreter on CPU)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from qwen3_api.kernels import moe_config_table, torch_moe
from qwen3_api.kernels import triton_moe as tm

SMALL = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 16, "GROUP_SIZE_M": 2}


def reference_moe(hidden, w13, w2, topk_weights, topk_ids):
    """First principles: for every token and each of its k experts, SwiGLU then weight, summed, in float64."""
    inter = w2.shape[-1]
    h, a, b = hidden.double(), w13.double(), w2.double()
    out = torch.zeros_like(h)
    for t in range(h.shape[0]):
        for k in range(topk_ids.shape[1]):
            e = int(topk_ids[t, k])
            gate_up = a[e] @ h[t]
            out[t] += float(topk_weights[t, k]) * (b[e] @ (F.silu(gate_up[:inter]) * gate_up[inter:]))
    return out


def make_inputs(tokens, hidden, inter, experts, top_k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    w13 = (torch.randn(experts, 2 * inter, hidden, generator=g) / hidden**0.5).to(dtype)
    w2 = (torch.randn(experts, hidden, inter, generator=g) / inter**0.5).to(dtype)
    logits = torch.randn(tokens, experts, generator=g)
    weights, ids = torch.topk(logits.softmax(-1), top_k, dim=-1)
    return x, w13, w2, weights / weights.sum(-1, keepdim=True), ids


@pytest.mark.parametrize("use_kernel", [True, False])
def test_align_groups_pairs_by_expert_in_padded_tiles(use_kernel):
    ids = torch.tensor([[3, 1], [1, 0], [3, 3]])  # pairs 0..5 -> experts 3,1,1,0,3,3
    sorted_ids, expert_ids, num_padded = tm.moe_align_block_size(ids, 4, 5, use_kernel=use_kernel)
    used = int(num_padded)
    assert used == 12  # experts 0, 1, 3 each padded to one tile of 4
    flat = ids.reshape(-1)
    for tile in range(used // 4):
        chunk = sorted_ids[tile * 4 : (tile + 1) * 4]
        real = chunk[chunk < flat.numel()]
        assert (flat[real.long()] == expert_ids[tile]).all()
    real = sorted_ids[:used][sorted_ids[:used] < 6].long()
    assert sorted(real.tolist()) == list(range(6))  # every pair exactly once
    assert sorted_ids.numel() >= used and (sorted_ids[used:] == 6).all()


def test_align_kernel_equals_the_sort_path_on_many_pairs():
    # 300 pairs over 3 chunks of the kernel, with empty experts: identical outputs, stable order included
    ids = torch.randint(0, 12, (100, 3), generator=torch.Generator().manual_seed(9))
    ids[ids == 5] = 6
    by_kernel = tm.moe_align_block_size(ids, 16, 12, use_kernel=True)
    by_sort = tm.moe_align_block_size(ids, 16, 12, use_kernel=False)
    used = int(by_sort[2])
    assert int(by_kernel[2]) == used
    assert torch.equal(by_kernel[0], by_sort[0])
    assert torch.equal(by_kernel[1][: used // 16], by_sort[1][: used // 16])


@pytest.mark.parametrize(
    "tokens,experts,top_k",
    [(1, 8, 2), (5, 8, 2), (16, 4, 3)],
)
def test_fused_moe_fp32_matches_expert_loop(tokens, experts, top_k):
    x, w13, w2, w, ids = make_inputs(tokens, 64, 32, experts, top_k, torch.float32)
    out = tm.fused_moe(x, w13, w2, w, ids, config=SMALL)
    ref = reference_moe(x, w13, w2, w, ids)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, torch_moe.fused_moe(x, w13, w2, w, ids), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block_n", [16, 64])
def test_fused_moe_handles_k_and_n_not_multiples_of_the_tiles(block_n):
    # block_n 64: the gate+up tile takes 32 columns of each, the down tile 64 (more than H = 40)
    x, w13, w2, w, ids = make_inputs(7, 40, 24, 6, 2, torch.float32, seed=3)
    config = {**SMALL, "BLOCK_SIZE_N": block_n, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 1}
    out = tm.fused_moe(x, w13, w2, w, ids, config=config)
    torch.testing.assert_close(out.double(), reference_moe(x, w13, w2, w, ids), rtol=1e-4, atol=1e-5)


def test_fused_moe_bf16_within_bf16_rounding():
    # bf16 inputs, float32 accumulation: the error is dominated by rounding the [T*K, I] activations and the
    # [T*K, H] outputs to bf16 (relative 2^-8 each), so a few 1e-2 relative is the honest bound.
    x, w13, w2, w, ids = make_inputs(6, 64, 32, 8, 2, torch.bfloat16, seed=1)
    out = tm.fused_moe(x, w13, w2, w, ids, config=SMALL)
    assert out.dtype == torch.bfloat16
    ref = reference_moe(x, w13, w2, w, ids)
    torch.testing.assert_close(out.double(), ref, rtol=3e-2, atol=3e-2)


def test_config_lookup_uses_nearest_bucket_of_the_shipped_h200_table():
    cfg_1 = moe_config_table.get_moe_config(1, 128, 768, torch.bfloat16, device_name="NVIDIA_H200")
    cfg_64 = moe_config_table.get_moe_config(60, 128, 768, torch.bfloat16, device_name="NVIDIA_H200")
    assert cfg_1["BLOCK_SIZE_M"] == 16 and cfg_1["BLOCK_SIZE_N"] == 64
    assert cfg_64["BLOCK_SIZE_N"] == 256 and cfg_64["num_warps"] == 8


def test_missing_table_warns_once_and_falls_back(caplog):
    table = moe_config_table
    table.load_config_table.cache_clear()
    with caplog.at_level(logging.WARNING, logger=table.logger.name):
        a = table.get_moe_config(4, 8, 32, torch.float32, device_name="No_Such_GPU")
        b = table.get_moe_config(4, 8, 32, torch.float32, device_name="No_Such_GPU")
    assert a == b == table.default_config(4, 8)
    assert sum("default MoE config" in r.getMessage() for r in caplog.records) == 1

"""Block-FP8 Triton GEMMs (interpreter on the CPU): rounding to the FP8 grid, the W8A8 linear and fused MoE,
against float32 references that quantize the activations the same way (tight) and against the plain dequantized
weights (the W8A8 error itself, loose)."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from qwen3_api.kernels import fp8_blocks as fb
from qwen3_api.kernels import torch_moe
from qwen3_api.kernels.triton_fp8 import to_fp8_grid
from qwen3_api.kernels.triton_fp8_linear import fp8_linear
from qwen3_api.kernels.triton_fp8_moe import fused_moe_fp8
from tests.kernels.helpers import fp8_experts, routing

# few, wide tiles: the interpreter runs each program in Python, so its time goes with their number
SMALL_MOE = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 16, "GROUP_SIZE_M": 2}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@triton.jit
def _grid_kernel(x_ptr, out_ptr, q_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    r = to_fp8_grid(tl.load(x_ptr + offs))
    tl.store(out_ptr + offs, r)
    tl.store(q_ptr + offs, r.to(tl.float8e4nv))


def test_fp8_grid_rounding_matches_torch_bit_for_bit():
    """Every tie between neighbouring FP8 values, subnormals, saturation and random magnitudes over 2**+-12."""
    values = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    values = values[torch.isfinite(values)].sort().values
    ties = (values[1:] + values[:-1]) / 2
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(4096, generator=g) * torch.exp2(torch.randint(-12, 12, (4096,), generator=g).float())
    x = torch.cat([ties, values, torch.tensor([500.0, -1e6, 449.0, 464.0, 1e-8]), wide])
    n = triton.next_power_of_2(x.numel())
    x = torch.cat([x, torch.zeros(n - x.numel())])
    out, q = torch.empty(n), torch.empty(n, dtype=torch.float8_e4m3fn)
    _grid_kernel[(1,)](x, out, q, N=n)
    expected = x.clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(out, expected.float())
    nonzero = expected.float() != 0  # zeros come out as +0 where torch keeps the sign: equal values
    assert torch.equal(q.view(torch.uint8)[nonzero], expected.view(torch.uint8)[nonzero])


@pytest.mark.parametrize(
    "m,n,k,block,bias",
    [(1, 256, 128, (128, 128), False), (3, 72, 80, (32, 32), True), (20, 150, 200, (64, 64), False)],
)
def test_fp8_linear_matches_the_w8a8_reference(m, n, k, block, bias):
    g = torch.Generator().manual_seed(m)
    weight, scale = fb.quantize(torch.randn(n, k, generator=g) / k**0.5, block)
    x = torch.randn(m, k, generator=g) * 3
    b = torch.randn(n, generator=g) if bias else None
    out = fp8_linear(x, weight, scale, block, b)
    assert out.shape == (m, n) and out.dtype == torch.float32
    assert rel(out, fb.w8a8_linear_reference(x, weight, scale, block, b)) < 1e-6
    # the activation quantization costs a few percent against the dequantized weights in float32
    plain = x @ fb.dequantize(weight, scale, block).T + (b if bias else 0)
    assert 1e-3 < rel(out, plain) < 5e-2
    out16 = fp8_linear(x.bfloat16(), weight, scale, block, b)
    assert out16.dtype == torch.bfloat16
    assert rel(out16, fb.w8a8_linear_reference(x.bfloat16(), weight, scale, block, b)) < 1e-2


def test_fp8_linear_keeps_leading_dims_and_empty_batches():
    weight, scale = fb.quantize(torch.randn(64, 64), (32, 32))
    x = torch.randn(2, 3, 64)
    out = fp8_linear(x, weight, scale, (32, 32))
    torch.testing.assert_close(out, fp8_linear(x.reshape(6, 64), weight, scale, (32, 32)).view(2, 3, 64))
    assert fp8_linear(torch.empty(0, 64), weight, scale, (32, 32)).shape == (0, 64)


@pytest.mark.parametrize(
    "tokens,experts,hidden,inter,top_k,block",
    [
        (1, 8, 64, 48, 2, (32, 32)),  # decode; I = 1.5 blocks: the up's scales start at their own row
        (6, 8, 80, 40, 3, (16, 32)),  # partial K blocks on both GEMMs, repeated experts
        (3, 4, 128, 128, 2, (128, 128)),  # the checkpoints' block
    ],
)
def test_fp8_moe_matches_the_w8a8_reference(tokens, experts, hidden, inter, top_k, block):
    w13, w2, s13, s2 = fp8_experts(experts, hidden, inter, block, seed=tokens)
    weights, ids = routing(tokens, experts, top_k)
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(2))
    out = fused_moe_fp8(x, w13, w2, s13, s2, block, weights, ids, config=SMALL_MOE)
    assert rel(out, fb.w8a8_moe_reference(x, w13, w2, s13, s2, block, weights, ids)) < 1e-6
    plain = torch_moe.fused_moe(
        x, fb.dequantize_w13(w13, s13, block), fb.dequantize(w2, s2, block), weights, ids
    )
    assert rel(out, plain) < 0.1
    # bf16 activations: rounded once more between the GEMMs, so a few FP8 roundings flip
    out16 = fused_moe_fp8(x.bfloat16(), w13, w2, s13, s2, block, weights, ids, config=SMALL_MOE)
    assert rel(out16, fb.w8a8_moe_reference(x.bfloat16(), w13, w2, s13, s2, block, weights, ids)) < 5e-2


def test_fp8_moe_without_a_table_uses_the_default_config(caplog):
    w13, w2, s13, s2 = fp8_experts(4, 128, 64, (128, 128))
    weights, ids = routing(2, 4, 2)
    x = torch.randn(2, 128)
    out = fused_moe_fp8(x, w13, w2, s13, s2, (128, 128), weights, ids)
    assert rel(out, fb.w8a8_moe_reference(x, w13, w2, s13, s2, (128, 128), weights, ids)) < 1e-6
    assert fused_moe_fp8(x[:0], w13, w2, s13, s2, (128, 128), weights[:0], ids[:0]).shape == (0, 128)

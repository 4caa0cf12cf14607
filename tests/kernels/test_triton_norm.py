"""Triton RMSNorm vs the model's torch RMSNorm, on rows, per-head strided views and bf16 (interpreter)."""

from __future__ import annotations

import pytest
import torch

from qwen3_api.kernels import torch_kernels
from qwen3_api.kernels.triton_norm import rms_norm
from qwen3_api.model.layers import RMSNorm


def torch_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    module = RMSNorm(x.shape[-1], eps, dtype=weight.dtype)
    module.weight.data.copy_(weight)
    return module(x, torch_kernels())


def test_rows_fp32_match_and_shape_is_kept():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 48, generator=g) * 3
    w = 1 + 0.1 * torch.randn(48, generator=g)
    out = rms_norm(x, w, 1e-6)
    assert out.shape == x.shape
    torch.testing.assert_close(out, torch_norm(x, w, 1e-6), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rms_norm(x[0], w, 1e-6), out[0], rtol=1e-6, atol=1e-6)


def test_per_head_view_of_a_fused_projection():
    # q of a fused qkv output: [T, heads, D] with a row stride of the whole projection
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(4, 3 * 4 * 16, generator=g)
    q = qkv[:, : 4 * 16].view(4, 4, 16)
    w = 1 + 0.1 * torch.randn(16, generator=g)
    assert not q.is_contiguous()
    torch.testing.assert_close(rms_norm(q, w, 1e-6), torch_norm(q, w, 1e-6), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [64, 100])
def test_bf16_matches_to_one_rounding(n):
    # Same arithmetic order as the torch module (float32 normalise, round, multiply, round). The mean's
    # summation order differs, and the interpreter's float32->bf16 conversion is not round-to-nearest-even
    # (the GPU's is), so each of the two roundings may land one ulp off: up to 2 x 2^-7 relative.
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(6, n, generator=g) * 2).to(torch.bfloat16)
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(torch.bfloat16)
    out = rms_norm(x, w, 1e-6)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch_norm(x, w, 1e-6).float(), rtol=2**-6, atol=1e-2)

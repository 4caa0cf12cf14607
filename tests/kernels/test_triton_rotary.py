"""Triton rotary embedding vs the torch rotate_half formula (interpreter)."""

from __future__ import annotations

import pytest
import torch

from qwen3_api.kernels import torch_pointwise
from qwen3_api.kernels.triton_rotary import rotary


def cos_sin(positions: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim)
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def first_principles(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (i, i + D/2) by position * inv_freq[i], in float64."""
    dim = x.shape[-1]
    half = dim // 2
    angle = positions.double()[:, None] / 10000 ** (torch.arange(0, dim, 2).double() / dim)[None, :]
    c, s = angle.cos()[:, None, :], angle.sin()[:, None, :]
    a, b = x[..., :half].double(), x[..., half:].double()
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1)


@pytest.mark.parametrize("heads,dim", [(4, 16), (3, 32)])
def test_fp32_matches_torch_and_first_principles(heads, dim):
    g = torch.Generator().manual_seed(0)
    positions = torch.tensor([0, 3, 17, 250, 4095])
    x = torch.randn(5, heads, dim, generator=g)
    cos, sin = cos_sin(positions, dim)
    out = rotary(x, cos, sin)
    torch.testing.assert_close(out, torch_pointwise.rotary(x, cos, sin), rtol=1e-6, atol=1e-6)
    # float32 angles: position 4095 x inv_freq carries ~4e-4 rad of rounding, in torch and Triton alike
    torch.testing.assert_close(out.double(), first_principles(x, positions), rtol=1e-3, atol=1e-3)


def test_bf16_strided_input_matches_torch_rounding():
    # Products and sum are rounded in the same order as torch. On the GPU both round to nearest even; the
    # interpreter's float32->bf16 conversion does not (checked with triton 3.9), so each of the three
    # roundings may land one ulp off: up to 2^-6 relative, 2^-5 absolute near cancellations.
    g = torch.Generator().manual_seed(1)
    fused = torch.randn(6, 2 * 4 * 32, generator=g).to(torch.bfloat16)
    x = fused[:, : 4 * 32].view(6, 4, 32)  # a strided view, like q out of a fused projection
    cos, sin = (t.to(torch.bfloat16) for t in cos_sin(torch.arange(6) * 7, 32))
    out = rotary(x, cos, sin)
    assert out.dtype == torch.bfloat16 and out.is_contiguous()
    torch.testing.assert_close(out.float(), torch_pointwise.rotary(x, cos, sin).float(), rtol=2**-6, atol=2**-5)

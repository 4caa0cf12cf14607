"""RMSNorm and rotary embedding in plain torch: the CPU backend, and the reference of the Triton versions."""

from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, in float32, cast back before the weight (as transformers does)."""
    if x.dtype == torch.float32:  # the same math, two no-op casts fewer (~70 ops per decoded token)
        return weight * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps))
    xf = x.float()
    xf = xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)



def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D] rotated (neox / rotate_half layout); cos, sin [T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]

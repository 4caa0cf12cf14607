"""RMSNorm and rotary embedding: plain torch (torch_rms_norm, torch_rotary: the reference of the Triton versions and
of the native ones), and on the CPU in float32 one native op each (cpu_native.cpp) where those are built."""

from __future__ import annotations

from typing import Any

import torch

import qwen3_api.kernels.cpu_native as cpu_native


def _native(x: torch.Tensor, weight: torch.Tensor) -> Any | None:
    """The native CPU kernels (cpu_native.cpp) where they apply: float32 CPU tensors, the kernels built."""
    if x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32:
        return cpu_native.ops()
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim; on the CPU in float32 one native op (a decode step runs four a layer)."""
    native = _native(x, weight)
    if native is not None:
        return native.rms_norm(x, weight, eps)
    return torch_rms_norm(x, weight, eps)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D] rotated (neox / rotate_half layout); cos, sin [T, D]. One native op on the CPU in float32."""
    native = _native(x, cos)
    if native is not None:
        return native.rotary(x, cos, sin)
    return torch_rotary(x, cos, sin)


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, in float32, cast back before the weight (as transformers does)."""
    if x.dtype == torch.float32:  # the same math, two no-op casts fewer (~70 ops per decoded token)
        return weight * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps))
    xf = x.float()
    xf = xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)



def torch_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D] rotated (neox / rotate_half layout); cos, sin [T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]

"""The FP8 KV cache in plain torch (``--kv-cache-dtype fp8``): float8_e4m3fn storage with per-tensor scales.

Each layer has one float32 scale for K and one for V (device tensors of one element, so CUDA graphs read their
current value): the cache stores value / scale rounded to float8_e4m3fn and saturated at +-448 (never NaN), and
readers multiply back. The torch attention uses these helpers; the Triton kernels do the same arithmetic inline.
"""

from __future__ import annotations

import torch

KV_FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0


def is_fp8(cache: torch.Tensor) -> bool:
    """Whether a KV cache tensor stores FP8."""
    return cache.dtype == KV_FP8_DTYPE


def quantize_kv(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """x / scale in float32, saturated and rounded (to nearest even) to float8_e4m3fn."""
    x = x.float() if scale is None else x.float() / scale.float()
    return x.clamp(-FP8_MAX, FP8_MAX).to(KV_FP8_DTYPE)


def dequantize_kv(x: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Cache values back in the compute dtype: x * scale for an FP8 cache, a plain cast otherwise."""
    if not is_fp8(x):
        return x.to(dtype)
    x = x.float()
    return (x if scale is None else x * scale.float()).to(dtype)


def store_fp8(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
) -> None:
    """store_kvcache for FP8 caches, through uint8 views (torch has no FP8 index_copy_ on the CPU)."""
    num_kv_heads, head_dim = k_cache.shape[-2:]
    for x, cache, scale in ((k, k_cache, k_scale), (v, v_cache, v_scale)):
        rows = quantize_kv(x, scale).view(torch.uint8)
        cache.view(torch.uint8).view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, rows)

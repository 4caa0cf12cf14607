"""Device-specific hot paths, chosen once per device: Triton on CUDA when available, plain torch otherwise.

A Triton backend is the module ``qwen3_api.kernels.triton_ops``; any of fused_moe / paged_attention /
store_kvcache it defines replaces the torch version on CUDA. QWEN3_API_KERNELS=torch forces the torch ones.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qwen3_api.kernels import torch_ops

TRITON_MODULE = "qwen3_api.kernels.triton_ops"


@dataclass(frozen=True, slots=True)
class Kernels:
    """The hot paths the model calls; see docs/CONTRACTS.md for their signatures."""

    name: str
    linear: Callable[..., torch.Tensor]
    fused_moe: Callable[..., torch.Tensor]
    paged_attention: Callable[..., torch.Tensor]
    store_kvcache: Callable[..., None]
    rms_norm: Callable[..., torch.Tensor]
    rotary: Callable[..., torch.Tensor]


TORCH_KERNELS = Kernels(
    name="torch",
    linear=torch_ops.linear,
    fused_moe=torch_ops.fused_moe,
    paged_attention=torch_ops.paged_attention,
    store_kvcache=torch_ops.store_kvcache,
    rms_norm=torch_ops.rms_norm,
    rotary=torch_ops.rotary,
)


def transposed_weights(device: torch.device | str | None, dtype: torch.dtype) -> bool:
    """Whether the model should store its projection weights [out, in] as transposed [in, out] tensors."""
    return torch_ops.transposed_weights(device, dtype)


def get_kernels(device: torch.device | str) -> Kernels:
    """The kernel set for a device (cached per device type)."""
    return _kernels_for(torch.device(device).type, os.environ.get("QWEN3_API_KERNELS", "auto"))


@functools.cache
def _kernels_for(device_type: str, choice: str) -> Kernels:
    if device_type != "cuda" or choice == "torch":
        return TORCH_KERNELS
    try:
        triton_ops = importlib.import_module(TRITON_MODULE)
    except ImportError:
        if choice == "triton":
            raise
        return TORCH_KERNELS
    ops = {
        name: getattr(triton_ops, name, getattr(torch_ops, name))
        for name in ("linear", "fused_moe", "paged_attention", "store_kvcache", "rms_norm", "rotary")
    }
    if "k" not in inspect.signature(ops["paged_attention"]).parameters:
        ops["paged_attention"] = _drop_new_kv(ops["paged_attention"])
    return Kernels(name="triton", **ops)


def _drop_new_kv(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Adapt a paged_attention without the optional k=/v= fast-path arguments (it reads the cache only)."""

    @functools.wraps(fn)
    def wrapper(q, k_cache, v_cache, attn, scale, *, k=None, v=None):  # noqa: ARG001
        return fn(q, k_cache, v_cache, attn, scale)

    return wrapper

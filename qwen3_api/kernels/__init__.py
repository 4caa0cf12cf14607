"""Device-specific hot paths, chosen once when a model is built: Triton on CUDA when installed, else torch.

A :class:`Kernels` is one model's set (``Qwen3ForCausalLM.kernels``): two literal sets below, no lookup by
name. The set is resolved by :func:`select_kernels` at model construction and passed down the forward, so
nothing on the hot path reads the environment. QWEN3_API_KERNELS=torch forces the torch set on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qwen3_api.kernels import torch_attention, torch_moe, torch_pointwise
from qwen3_api.kernels.torch_linear import CpuLinear, transposed_weights


@dataclass(frozen=True, slots=True)
class Kernels:
    """The hot paths one model calls; see docs/CONTRACTS.md for their signatures."""

    name: str
    linear: CpuLinear  # per model: it holds the lm_head's tuning verdict (CpuLinear.tune)
    fused_moe: Callable[..., torch.Tensor]
    paged_attention: Callable[..., torch.Tensor]
    store_kvcache: Callable[..., None]
    rms_norm: Callable[..., torch.Tensor]
    rotary: Callable[..., torch.Tensor]
    # block-FP8 GEMMs (issue 16): None in a set without them, whose models dequantize FP8 checkpoints at load
    fp8_linear: Callable[..., torch.Tensor] | None = None
    fp8_moe: Callable[..., torch.Tensor] | None = None

    def warm_up(self, lm_head: torch.Tensor) -> None:
        """Prepare for serving once the weights are loaded: native CPU kernels built, the lm_head timed."""
        self.linear.warm_up(lm_head)


def torch_kernels() -> Kernels:
    """The plain-torch set (the CPU backend; also the reference the Triton kernels are tested against)."""
    return Kernels(
        name="torch",
        linear=CpuLinear(),
        fused_moe=torch_moe.fused_moe,
        paged_attention=torch_attention.paged_attention,
        store_kvcache=torch_attention.store_kvcache,
        rms_norm=torch_pointwise.rms_norm,
        rotary=torch_pointwise.rotary,
    )


def triton_kernels() -> Kernels:
    """The CUDA set: Triton MoE, paged attention, KV store, RMSNorm and rotary; linear is F.linear (cuBLAS).

    Raises ImportError without triton (an optional dependency: the `triton` extra).
    """
    # imported here, not at the top: triton is optional and CPU-only installs never import it
    from qwen3_api.kernels import triton_attention, triton_moe, triton_norm, triton_rotary
    from qwen3_api.kernels.triton_fp8_linear import fp8_linear
    from qwen3_api.kernels.triton_fp8_moe import fused_moe_fp8

    return Kernels(
        name="triton",
        linear=CpuLinear(),
        fused_moe=triton_moe.fused_moe,
        paged_attention=triton_attention.paged_attention,
        store_kvcache=triton_attention.store_kvcache,
        rms_norm=triton_norm.rms_norm,
        rotary=triton_rotary.rotary,
        fp8_linear=fp8_linear,
        fp8_moe=fused_moe_fp8,
    )


def select_kernels(device: torch.device | str, choice: str | None = None) -> Kernels:
    """A fresh kernel set for a model on ``device``: Triton on CUDA when it imports, else torch.

    ``choice``: auto | torch | triton (default: $QWEN3_API_KERNELS, else auto); "triton" raises without it.
    """
    choice = choice or os.environ.get("QWEN3_API_KERNELS", "auto")
    if torch.device(device).type != "cuda" or choice == "torch":
        return torch_kernels()
    try:
        return triton_kernels()
    except ImportError:
        if choice == "triton":
            raise
        return torch_kernels()


__all__ = ["CpuLinear", "Kernels", "select_kernels", "torch_kernels", "transposed_weights", "triton_kernels"]

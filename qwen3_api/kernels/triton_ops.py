"""The Triton backend that ``get_kernels`` picks on CUDA: the three hot paths of docs/CONTRACTS.md."""

from __future__ import annotations

from qwen3_api.kernels.triton_attention import paged_attention, store_kvcache
from qwen3_api.kernels.triton_moe import fused_moe
from qwen3_api.kernels.triton_norm import rms_norm
from qwen3_api.kernels.triton_rotary import rotary

__all__ = ["fused_moe", "paged_attention", "rms_norm", "rotary", "store_kvcache"]

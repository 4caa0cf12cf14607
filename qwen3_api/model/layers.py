"""Qwen3 building blocks: RMSNorm, rotary embedding (with YaRN), attention, dense MLP, sparse MoE block.

Parameters are allocated uninitialised (torch.empty) on the target device and dtype: the loader fills every
one of them from the checkpoint, so initialising them first would only cost time and memory.
Projections that read the same input are merged (qkv_proj, gate_up_proj, w13) to run one matmul instead of
several; the loader maps the checkpoint's separate tensors into their row ranges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qwen3_api.kernels import Kernels, transposed_weights
from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.fp8 import Fp8Plan, fp8_experts, fp8_projection, project


def empty_param(*shape: int, device: Any, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype), requires_grad=False)


def weight_param(*shape: int, device: Any, dtype: torch.dtype) -> nn.Parameter:
    """A projection weight [..., out, in] in the memory layout the device's matmul reads fastest: on the CPU in
    float32 the transpose of a contiguous [..., in, out] tensor (kernels.transposed_weights). The logical shape
    is the checkpoint's either way, so the loader and every reader see the same tensor."""
    if not transposed_weights(device, dtype):
        return empty_param(*shape, device=device, dtype=dtype)
    *lead, out, inp = shape
    storage = torch.empty(*lead, inp, out, device=device, dtype=dtype)
    return nn.Parameter(storage.transpose(-1, -2), requires_grad=False)


def projection(
    modules: Sequence[str], part_rows: Sequence[int], cols: int, *, fp8: Fp8Plan | None, device: Any, dtype: torch.dtype
) -> nn.Module:
    """A projection holder with ``weight`` [sum(part_rows), cols] merging the checkpoint's ``modules`` (HF names,
    in row order): FP8 with its block scales when the model keeps them in FP8 (model/fp8.py), else weight_param."""
    holder = nn.Module()
    if fp8 is not None and fp8.holds_fp8(modules, part_rows):
        fp8_projection(holder, sum(part_rows), cols, fp8.config, device)
    else:
        holder.weight = weight_param(sum(part_rows), cols, device=device, dtype=dtype)
    return holder


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, in float32, cast back before the weight (as transformers does)."""

    def __init__(self, dim: int, eps: float, *, device: Any = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.eps = eps
        self.weight = empty_param(dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        # one fused kernel on CUDA instead of eight small ones (kernels.rms_norm)
        return kernels.rms_norm(x, self.weight, self.eps)


def rope_inv_freq(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [head_dim/2] float32, attention scaling), identical to transformers'
    default and `_compute_yarn_parameters` RoPE initialisation."""
    dim = config.head_dim
    base = config.rope_theta
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    scaling = config.rope_scaling
    if scaling is None:
        return 1.0 / pos_freqs, 1.0
    factor = float(scaling["factor"])
    original = scaling["original_max_position_embeddings"]

    def get_mscale(scale: float, mscale: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = get_mscale(factor)
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a division by zero in the ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """cos/sin for arbitrary positions, computed per step (no table sized by the context length)."""

    def __init__(self, config: ModelConfig, *, device: Any = None):
        super().__init__()
        inv_freq, self.attention_scaling = rope_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq.to(device), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> (cos, sin) [T, head_dim] in dtype."""
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)


class Qwen3Attention(nn.Module):
    """GQA with per-head RMSNorm on q and k before RoPE, over the engine's paged KV cache."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        device: Any = None,
        dtype: torch.dtype = torch.float32,
        fp8: Fp8Plan | None = None,
        prefix: str = "",
    ):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        kw = {"device": device, "dtype": dtype}
        qkv = [f"{prefix}q_proj", f"{prefix}k_proj", f"{prefix}v_proj"]
        sizes = [self.q_size, self.kv_size, self.kv_size]
        self.qkv_proj = projection(qkv, sizes, config.hidden_size, fp8=fp8, **kw)
        self.qkv_proj.bias = empty_param(self.q_size + 2 * self.kv_size, **kw) if config.attention_bias else None
        self.o_proj = projection([f"{prefix}o_proj"], [config.hidden_size], self.q_size, fp8=fp8, **kw)
        self.o_proj.bias = empty_param(config.hidden_size, **kw) if config.attention_bias else None
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, **kw)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, **kw)
        # per-tensor scales of an FP8 KV cache (stored = value / scale); ignored by caches of other dtypes
        self.register_buffer("k_scale", torch.ones(1, device=device), persistent=False)
        self.register_buffer("v_scale", torch.ones(1, device=device), persistent=False)

    def forward(
        self,
        hidden: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        attn: AttentionMetadata,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        kernels: Kernels,
    ) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        qkv = project(self.qkv_proj, hidden, kernels)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = self.q_norm(q.view(num_tokens, self.num_heads, self.head_dim), kernels)
        k = self.k_norm(k.view(num_tokens, self.num_kv_heads, self.head_dim), kernels)
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        cos, sin = cos_sin  # rotate_half layout, one launch each on CUDA
        q, k = kernels.rotary(q, cos, sin), kernels.rotary(k, cos, sin)
        k_cache, v_cache = kv_cache
        scales = {"k_scale": self.k_scale, "v_scale": self.v_scale}
        kernels.store_kvcache(k, v, k_cache, v_cache, attn.slot_mapping, **scales)
        out = kernels.paged_attention(q, k_cache, v_cache, attn, self.scale, k=k, v=v, **scales)
        return project(self.o_proj, out.reshape(num_tokens, self.q_size), kernels)


class Qwen3MLP(nn.Module):
    """Dense SwiGLU: down(silu(gate(x)) * up(x)), gate and up merged in gate_up_proj."""

    def __init__(
        self,
        hidden: int,
        inter: int,
        *,
        device: Any = None,
        dtype: torch.dtype = torch.float32,
        fp8: Fp8Plan | None = None,
        prefix: str = "",
    ):
        super().__init__()
        self.inter = inter
        kw = {"fp8": fp8, "device": device, "dtype": dtype}
        self.gate_up_proj = projection([f"{prefix}gate_proj", f"{prefix}up_proj"], [inter, inter], hidden, **kw)
        self.down_proj = projection([f"{prefix}down_proj"], [hidden], inter, **kw)

    def forward(self, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        gate_up = project(self.gate_up_proj, x, kernels)
        return project(self.down_proj, F.silu(gate_up[:, : self.inter]) * gate_up[:, self.inter :], kernels)


class Qwen3SparseMoeBlock(nn.Module):
    """Softmax router over all experts (float32), top-k, optional renormalisation, routed SwiGLU experts."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        device: Any = None,
        dtype: torch.dtype = torch.float32,
        fp8: Fp8Plan | None = None,
        prefix: str = "",
    ):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        num_experts, hidden, inter = config.num_experts, config.hidden_size, config.moe_intermediate_size
        self.gate = projection([f"{prefix}gate"], [num_experts], hidden, fp8=fp8, device=device, dtype=dtype)
        experts = [f"{prefix}experts.{j}.{p}" for j in range(num_experts) for p in ("gate_proj", "up_proj", "down_proj")]
        if fp8 is not None and fp8.keep_fp8 and fp8.converted(experts):
            fp8_experts(self, num_experts, hidden, inter, fp8.config, device)
        else:
            self.w13 = weight_param(num_experts, 2 * inter, hidden, device=device, dtype=dtype)
            self.w2 = weight_param(num_experts, hidden, inter, device=device, dtype=dtype)

    def route(self, x: torch.Tensor, kernels: Kernels) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, H] -> (topk_weights [T, K] float32, topk_ids [T, K])."""
        probs = torch.softmax(project(self.gate, x, kernels), dim=-1, dtype=torch.float32)
        weights, ids = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, ids

    def forward(self, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        weights, ids = self.route(x, kernels)
        if hasattr(self, "w13_scale_inv"):  # FP8 experts (model/fp8.py)
            scales = (self.w13_scale_inv, self.w2_scale_inv, self.fp8_block)
            return kernels.fp8_moe(x, self.w13, self.w2, *scales, weights, ids)
        return kernels.fused_moe(x, self.w13, self.w2, weights, ids)

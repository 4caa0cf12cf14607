"""The Qwen3 / Qwen3-MoE causal LM over a flat batch: embeddings -> decoder layers -> norm -> lm_head."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qwen3_api.kernels import Kernels, select_kernels
from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.fp8 import Fp8Plan
from qwen3_api.model.layers import (
    Qwen3Attention,
    Qwen3MLP,
    Qwen3SparseMoeBlock,
    RMSNorm,
    RotaryEmbedding,
    empty_param,
    weight_param,
)


class Qwen3DecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm MLP (dense or sparse MoE), each with a residual."""

    def __init__(
        self, config: ModelConfig, layer_idx: int, *, device: Any, dtype: torch.dtype, fp8: Fp8Plan | None = None
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        prefix = f"model.layers.{layer_idx}."  # the checkpoint's module names, for the FP8 plan
        self.self_attn = Qwen3Attention(config, fp8=fp8, prefix=f"{prefix}self_attn.", **kw)
        self.mlp: Qwen3MLP | Qwen3SparseMoeBlock
        if config.layer_is_moe(layer_idx):
            self.mlp = Qwen3SparseMoeBlock(config, fp8=fp8, prefix=f"{prefix}mlp.", **kw)
        else:
            mlp_kw = {"fp8": fp8, "prefix": f"{prefix}mlp.", **kw}
            self.mlp = Qwen3MLP(config.hidden_size, config.intermediate_size, **mlp_kw)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)

    def forward(self, hidden, cos_sin, attn, kv_cache, kernels) -> torch.Tensor:  # noqa: ANN001
        attn_out = self.self_attn(self.input_layernorm(hidden, kernels), cos_sin, attn, kv_cache, kernels)
        hidden = hidden + attn_out
        return hidden + self.mlp(self.post_attention_layernorm(hidden, kernels), kernels)


class Qwen3Model(nn.Module):
    def __init__(self, config: ModelConfig, *, device: Any, dtype: torch.dtype, fp8: Fp8Plan | None = None):
        super().__init__()
        self.embed_tokens = nn.Module()
        self.embed_tokens.weight = empty_param(config.vocab_size, config.hidden_size, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            Qwen3DecoderLayer(config, i, device=device, dtype=dtype, fp8=fp8) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
        self.rotary_emb = RotaryEmbedding(config, device=device)


class Qwen3ForCausalLM(nn.Module):
    """One class for both architectures (config.is_moe). Weights are uninitialised until loaded.

    ``kernels``: the hot paths every layer calls, resolved once here (default: ``select_kernels(device)``) and
    passed down the forward; replace the attribute to run the same weights through another set.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        device: Any = None,
        dtype: torch.dtype | None = None,
        kernels: Kernels | None = None,
    ):
        super().__init__()
        self.config = config
        self.kernels = kernels or select_kernels(device if device is not None else "cpu")
        dtype = dtype or config.torch_dtype
        # block-FP8 checkpoints: which projections stay FP8 in memory (None when the checkpoint is not FP8)
        self.fp8 = Fp8Plan.build(config, self.kernels, device if device is not None else "cpu")
        self.model = Qwen3Model(config, device=device, dtype=dtype, fp8=self.fp8)
        self.lm_head = nn.Module()
        if config.tie_word_embeddings:
            # shared with the embedding, which keeps the row-major layout its row lookups need
            self.lm_head.weight = self.model.embed_tokens.weight
        else:
            self.lm_head.weight = weight_param(config.vocab_size, config.hidden_size, device=device, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        attn: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """input_ids, positions [T] of a flat batch -> final hidden states [T, hidden] (after the norm).

        Writes the new tokens' K/V into kv_caches (one (k, v) pair per layer) at attn.slot_mapping.
        """
        kernels = self.kernels
        hidden = F.embedding(input_ids, self.model.embed_tokens.weight)
        cos_sin = self.model.rotary_emb(positions, hidden.dtype)
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            hidden = layer(hidden, cos_sin, attn, kv_cache, kernels)
        return self.model.norm(hidden, kernels)

    @torch.inference_mode()
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> logits [N, vocab_size] in float32."""
        return self.kernels.linear(hidden, self.lm_head.weight).float()

    def warm_up_kernels(self) -> None:
        """Once the weights are loaded, before serving: let the kernels prepare for them (on the CPU: build
        the native kernels, time the lm_head's one-row linear both ways; see CpuLinear)."""
        self.kernels.warm_up(self.lm_head.weight)

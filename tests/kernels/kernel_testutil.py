"""A tiny random Qwen3-MoE network, and the Triton kernel set to run it through on CPU (the interpreter)."""

from __future__ import annotations

import math

import torch

from qwen3_api.kernels import Kernels, select_kernels
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

TINY = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 512,
    "torch_dtype": "float32",
}


def tiny_model(seed: int = 0, kernels: Kernels | None = None) -> Qwen3ForCausalLM:
    """Random weights with unit-scale activations, so routing and attention are not degenerate; ``kernels``:
    the set its forward calls (default: the CPU's, torch)."""
    config = ModelConfig.from_dict(TINY)
    net = Qwen3ForCausalLM(config, device="cpu", dtype=torch.float32, kernels=kernels)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    return net.eval()


def triton_kernels() -> Kernels:
    """The CUDA backend's kernel set (resolved without a GPU; the interpreter runs it on CPU tensors)."""
    kernels = select_kernels("cuda", "auto")
    assert kernels.name == "triton"
    return kernels

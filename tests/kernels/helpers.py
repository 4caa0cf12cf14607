"""A tiny random Qwen3-MoE network, and the Triton kernel set to run it through on CPU (the interpreter); block-FP8
material: quantized experts, routings, and a torch kernel set whose FP8 GEMMs are the float32 W8A8 references (so
a model can keep FP8 weights on the CPU and be compared with the Triton set, term for term)."""

from __future__ import annotations

import dataclasses
import math

import torch

from qwen3_api.kernels import Kernels, select_kernels, torch_kernels
from qwen3_api.kernels import fp8_blocks as fb
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM
from tests.model.helpers import TINY_MOE

# The one tiny MoE of the tests (tests/model/helpers.py), with a smaller vocabulary: the Triton interpreter is slow.
TINY = TINY_MOE | {"vocab_size": 128, "torch_dtype": "float32"}


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


def fp8_experts(
    experts: int, hidden: int, inter: int, block: tuple[int, int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w13, w2, w13_scale_inv, w2_scale_inv) of random experts quantized per expert as a checkpoint stores them
    (gate, up and down separately; w13's scales: the gate's row blocks, then the up's)."""
    g = torch.Generator().manual_seed(seed)
    w13 = torch.randn(experts, 2 * inter, hidden, generator=g) / hidden**0.5
    w2 = torch.randn(experts, hidden, inter, generator=g) / inter**0.5
    return fb.quantize_experts(w13, w2, block)


def routing(tokens: int, experts: int, top_k: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Renormalised top-k routing weights and expert ids of random router logits."""
    g = torch.Generator().manual_seed(seed)
    weights, ids = torch.topk(torch.randn(tokens, experts, generator=g).softmax(-1), top_k, dim=-1)
    return weights / weights.sum(-1, keepdim=True), ids


def _ref_linear(x, weight, scale, block, bias=None):  # noqa: ANN001, ANN202
    return fb.w8a8_linear_reference(x, weight, scale, block, bias).to(x.dtype)


def _ref_moe(x, w13, w2, s13, s2, block, weights, ids):  # noqa: ANN001, ANN202
    return fb.w8a8_moe_reference(x, w13, w2, s13, s2, block, weights, ids).to(x.dtype)


def w8a8_reference_kernels() -> Kernels:
    """The torch set plus float32 W8A8 references as its FP8 GEMMs (tests only: slow, exact)."""
    return dataclasses.replace(
        torch_kernels(), name="torch-w8a8-reference", fp8_linear=_ref_linear, fp8_moe=_ref_moe
    )

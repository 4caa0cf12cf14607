"""The backend is chosen once, by device, when the model is built: torch on CPU, the Triton set on CUDA."""

from __future__ import annotations

import torch

from qwen3_api.kernels import (
    select_kernels,
    torch_attention,
    torch_moe,
    torch_pointwise,
    triton_attention,
    triton_moe,
    triton_norm,
    triton_rotary,
)
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM


def test_cpu_keeps_the_torch_backend():
    kernels = select_kernels(torch.device("cpu"))
    assert kernels.name == "torch"
    assert kernels.fused_moe is torch_moe.fused_moe
    assert kernels.paged_attention is torch_attention.paged_attention
    assert kernels.store_kvcache is torch_attention.store_kvcache


def test_cuda_resolves_to_the_triton_kernels():
    # select_kernels needs no GPU to resolve the choice: it only imports the Triton modules.
    kernels = select_kernels("cuda", "auto")
    assert kernels.name == "triton"
    assert kernels.fused_moe is triton_moe.fused_moe
    assert kernels.store_kvcache is triton_attention.store_kvcache
    assert kernels.paged_attention is triton_attention.paged_attention
    assert select_kernels("cuda", "torch").name == "torch"


def test_the_environment_is_read_when_the_model_is_built_not_per_call(monkeypatch):
    monkeypatch.setenv("QWEN3_API_KERNELS", "torch")
    assert select_kernels("cuda").name == "torch"
    config = ModelConfig.from_dict({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 16, "hidden_size": 8,
                                    "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                    "num_key_value_heads": 1, "head_dim": 4, "torch_dtype": "float32"})
    net = Qwen3ForCausalLM(config, device="meta")
    assert net.kernels.name == "torch"
    # each model gets its own set: the linear holds that model's tuning verdict
    assert Qwen3ForCausalLM(config, device="meta").kernels.linear is not net.kernels.linear


def test_rms_norm_dispatch_cpu_torch_cuda_triton():
    assert select_kernels("cpu").rms_norm is torch_pointwise.rms_norm
    assert select_kernels("cuda", "auto").rms_norm is triton_norm.rms_norm


def test_rotary_dispatch_cpu_torch_cuda_triton():
    assert select_kernels("cpu").rotary is torch_pointwise.rotary
    assert select_kernels("cuda", "auto").rotary is triton_rotary.rotary

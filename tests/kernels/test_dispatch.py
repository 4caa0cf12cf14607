"""The backend is chosen once, by device: torch on CPU, the Triton module on CUDA."""

from __future__ import annotations

import importlib

import torch

from qwen3_api.kernels import (
    TORCH_KERNELS,
    TRITON_MODULE,
    _kernels_for,
    get_kernels,
    triton_attention,
    triton_moe,
)


def test_cpu_keeps_the_torch_backend():
    assert get_kernels(torch.device("cpu")) is TORCH_KERNELS


def test_cuda_resolves_to_the_triton_kernels():
    # _kernels_for needs no GPU to resolve the choice: it only imports the backend module.
    kernels = _kernels_for("cuda", "auto")
    module = importlib.import_module(TRITON_MODULE)
    assert kernels.name == "triton"
    assert module.fused_moe is triton_moe.fused_moe
    assert kernels.fused_moe is triton_moe.fused_moe
    assert kernels.store_kvcache is triton_attention.store_kvcache
    assert kernels.paged_attention.__wrapped__ is triton_attention.paged_attention
    assert _kernels_for("cuda", "torch") is TORCH_KERNELS


def test_rms_norm_dispatch_cpu_torch_cuda_triton():
    from qwen3_api.kernels import torch_ops, triton_norm

    assert TORCH_KERNELS.rms_norm is torch_ops.rms_norm
    assert _kernels_for("cuda", "auto").rms_norm is triton_norm.rms_norm


def test_rotary_dispatch_cpu_torch_cuda_triton():
    from qwen3_api.kernels import torch_ops, triton_rotary

    assert TORCH_KERNELS.rotary is torch_ops.rotary
    assert _kernels_for("cuda", "auto").rotary is triton_rotary.rotary

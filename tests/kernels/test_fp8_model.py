"""A tiny block-FP8 checkpoint in the official format through the Triton set (interpreter): the loader keeps the
checkpoint's FP8 bytes and scales at their rows of the merged projections, and the network matches a model whose
FP8 GEMMs are the float32 W8A8 references (tight) and the CPU path's dequantized float32 model (loose)."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from safetensors.torch import load_file

from qwen3_api.demo.tiny_fp8 import make_tiny_fp8_model
from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels import Kernels, torch_kernels
from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.loader import load_weights
from qwen3_api.model.qwen3 import Qwen3ForCausalLM
from tests.kernels.helpers import triton_kernels, w8a8_reference_kernels

FP8 = torch.float8_e4m3fn
# wide tiles: the interpreter runs each program in Python, so its time goes with their number (the tile sizes
# change which programs compute what, not the arithmetic)
WIDE_MOE = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1}
WIDE_LINEAR = {"BLOCK_M": 16, "BLOCK_N": 256, "GROUP_SIZE_M": 1}


def wide_triton_kernels() -> Kernels:
    """The Triton set with its FP8 GEMMs at one wide tile configuration."""
    kernels = triton_kernels()
    return dataclasses.replace(
        kernels,
        fp8_linear=functools.partial(kernels.fp8_linear, config=WIDE_LINEAR),
        fp8_moe=functools.partial(kernels.fp8_moe, config=WIDE_MOE),
    )


@pytest.fixture(scope="module")
def fp8_dir(tmp_path_factory):
    return make_tiny_fp8_model(tmp_path_factory.mktemp("fp8"))


def load(path, kernels: Kernels) -> Qwen3ForCausalLM:
    net = Qwen3ForCausalLM(
        ModelConfig.from_pretrained(path), device="cpu", dtype=torch.float32, kernels=kernels
    )
    load_weights(net, path, progress=False)
    return net.eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_the_triton_set_keeps_the_checkpoint_fp8_bytes_and_scales(fp8_dir):
    tensors = load_file(str(fp8_dir / "model.safetensors"))
    net = load(fp8_dir, triton_kernels())
    assert net.fp8 is not None and net.fp8.keep_fp8
    layer = net.model.layers[1]
    p = "model.layers.1."

    def cat(*names: str) -> torch.Tensor:
        return torch.cat([tensors[p + n] for n in names])

    qkv = layer.self_attn.qkv_proj
    assert qkv.weight.dtype == FP8 and qkv.weight_scale_inv.dtype == torch.float32
    names = [f"self_attn.{x}_proj.weight" for x in "qkv"]
    assert torch.equal(qkv.weight.view(torch.uint8), cat(*names).view(torch.uint8))
    assert torch.equal(qkv.weight_scale_inv, cat(*[n + "_scale_inv" for n in names]))
    mlp = layer.mlp
    for j in (0, 3):
        e = f"mlp.experts.{j}."
        w13 = cat(e + "gate_proj.weight", e + "up_proj.weight")
        assert torch.equal(mlp.w13[j].view(torch.uint8), w13.view(torch.uint8))
        # the gate's one (partial) row block, then the up's
        assert torch.equal(
            mlp.w13_scale_inv[j], cat(e + "gate_proj.weight_scale_inv", e + "up_proj.weight_scale_inv")
        )
        assert torch.equal(mlp.w2_scale_inv[j], tensors[p + e + "down_proj.weight_scale_inv"])
    assert mlp.gate.weight.dtype == torch.float32  # the router stays in the model dtype


def forward_steps(net: Qwen3ForCausalLM) -> list[torch.Tensor]:
    """Logits of a two-sequence prefill (6 and 3 tokens) and of one decode step after it."""
    caches = allocate_kv_cache(net.config, 4, 16, "cpu", torch.float32)
    g = torch.Generator().manual_seed(11)
    out = []
    for query_lens, context_lens in (([6, 3], [6, 3]), ([1, 1], [7, 4])):
        attn = AttentionMetadata.build(query_lens, context_lens, [[0], [1]], 16, "cpu")
        ids = torch.randint(0, net.config.vocab_size, (sum(query_lens),), generator=g)
        pos = torch.cat([torch.arange(c - n, c) for n, c in zip(query_lens, context_lens, strict=True)])
        out.append(net.compute_logits(net(ids, pos, attn, caches)))
    return out


def test_the_fp8_network_matches_the_w8a8_reference_and_the_dequantized_model(fp8_dir):
    by_triton = forward_steps(load(fp8_dir, wide_triton_kernels()))
    by_reference = forward_steps(load(fp8_dir, w8a8_reference_kernels()))
    dequantized = load(fp8_dir, torch_kernels())
    assert dequantized.fp8 is not None and not dequantized.fp8.keep_fp8
    by_cpu = forward_steps(dequantized)
    for got, ref, cpu in zip(by_triton, by_reference, by_cpu, strict=True):
        assert rel(got, ref) < 1e-5
        # the W8A8 activation quantization is the only difference from the dequantized float32 model
        assert 1e-4 < rel(got, cpu) < 0.1

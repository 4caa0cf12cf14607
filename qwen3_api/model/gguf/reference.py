"""The float32 reference of a GGUF model: the function its weights define, computed without our kernels.

Every tensor is dequantized by the ``gguf`` package (llama.cpp's own ``gguf.quants.dequantize``) into a plain
float32 Qwen3ForCausalLM with the torch kernels, through the Hugging Face names the converter read them from.
Tests and benchmarks/gguf_accuracy.py measure the served model against it. It holds the model in float32 (4
bytes a weight): for small models only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from qwen3_api.kernels import torch_kernels
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.gguf.files import GgufCheckpoint, GgufTensor, open_gguf
from qwen3_api.model.gguf.sidecar import prepare, read_pointer
from qwen3_api.model.loader import checkpoint_layout
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

# GGUF name (per block: blk.N.<x>) -> Hugging Face name (model.layers.N.<y>)
_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate_inp.weight": "mlp.gate.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_EXPERTS = {"ffn_gate_exps.weight": "gate_proj", "ffn_up_exps.weight": "up_proj", "ffn_down_exps.weight": "down_proj"}
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}


def dequantized(t: GgufTensor) -> torch.Tensor:
    """A tensor's float32 values by ``gguf.quants.dequantize``, in torch order (ne reversed)."""
    import gguf

    values = gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType(t.type_id))
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(t.shape)


def hf_tensors(ckpt: GgufCheckpoint) -> dict[str, torch.Tensor]:
    """Every tensor under its Hugging Face name, dequantized (expert stacks split into experts)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in ckpt.tensors.items():
        if name in _TOP:
            out[_TOP[name]] = dequantized(t)
            continue
        m = re.match(r"blk\.(\d+)\.(.+)$", name)
        if m is None:
            continue
        prefix, leaf = f"model.layers.{m.group(1)}.", m.group(2)
        if leaf in _BLOCK:
            out[prefix + _BLOCK[leaf]] = dequantized(t)
        elif leaf in _EXPERTS:
            stack = dequantized(t)
            for j in range(stack.shape[0]):
                out[f"{prefix}mlp.experts.{j}.{_EXPERTS[leaf]}.weight"] = stack[j]
    return out


def reference_model(path: str | Path) -> tuple[Qwen3ForCausalLM, ModelConfig]:
    """A float32 Qwen3ForCausalLM (torch kernels) holding the GGUF model's weights as ``gguf`` dequantizes them."""
    directory = Path(path) if read_pointer(path) is not None else prepare(path)
    config = ModelConfig.from_pretrained(directory)
    ckpt = open_gguf(read_pointer(directory)["files"][0])
    model = Qwen3ForCausalLM(config, device="cpu", dtype=torch.float32, kernels=torch_kernels())
    layout = checkpoint_layout(model)
    tensors = hf_tensors(ckpt)
    missing = sorted(set(layout) - set(tensors))
    if missing:
        raise ValueError(f"the GGUF file lacks {missing[:5]}")
    with torch.no_grad():
        for name, target in layout.items():
            target.view().copy_(tensors[name])
    model.eval()
    return model, config

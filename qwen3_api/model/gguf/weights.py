"""A GGUF file's tensors placed into the Qwen3 network, kept as the file stores them.

The network is built on the meta device (no memory), then each weight is put in place: matrices and expert
stacks as QuantTensor views of the memory-mapped file (whatever their type, F32 included: the kernels read every
supported type), norms and the router as float32 tensors (views of the file when it stores them in F32). Nothing
is dequantized or copied, so the resident memory is the file's pages the kernels touch.

GGUF names (llama.cpp's tensor map for qwen3 / qwen3moe) -> ours:
token_embd -> model.embed_tokens; output_norm -> model.norm; output -> lm_head (absent: tied to the embedding);
blk.N.attn_{norm,q,k,v,output,q_norm,k_norm} -> input_layernorm, self_attn.qkv_proj (q, k, v as one group),
o_proj, q_norm, k_norm; blk.N.ffn_norm -> post_attention_layernorm; MoE: ffn_gate_inp -> mlp.gate,
ffn_{gate,up}_exps -> mlp.w13, ffn_down_exps -> mlp.w2; dense: ffn_{gate,up} -> mlp.gate_up_proj, ffn_down ->
mlp.down_proj.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qwen3_api.kernels.quant_linear import QuantExperts, QuantGroup, QuantTensor
from qwen3_api.kernels.quant_types import BY_ID, SUPPORTED_TYPES
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.gguf.files import GgufCheckpoint, GgufError, GgufTensor
from qwen3_api.model.layers import rope_inv_freq


def _type_name(type_id: int) -> str:
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type {type_id}"


class _Placer:
    """Takes tensors out of the checkpoint by name, checking shapes and types, and remembers which it used."""

    def __init__(self, ckpt: GgufCheckpoint) -> None:
        self.ckpt = ckpt
        self.used: set[str] = set()

    def _tensor(self, name: str, shape: tuple[int, ...]) -> GgufTensor:
        t = self.ckpt.tensors.get(name)
        if t is None:
            raise GgufError(f"{self.ckpt.files[0].name}: tensor {name} is missing")
        if t.shape != shape:
            raise GgufError(f"{self.ckpt.files[0].name}: tensor {name} has shape {list(t.shape)}, the config "
                            f"needs {list(shape)}")
        if t.type_id not in BY_ID:
            raise GgufError(f"{self.ckpt.files[0].name}: tensor {name} is {_type_name(t.type_id)}, a type this server does not "
                            f"run (supported: {', '.join(SUPPORTED_TYPES)})")
        self.used.add(name)
        return t

    def _quant(self, t: GgufTensor, shape: tuple[int, ...]) -> QuantTensor:
        raw = torch.from_numpy(np.ascontiguousarray(t.data).reshape(-1).view(np.uint8))
        return QuantTensor(raw, BY_ID[t.type_id], shape)

    def quant(self, name: str, *shape: int) -> QuantTensor:
        """A matrix or expert stack, kept in the file's blocks."""
        return self._quant(self._tensor(name, shape), shape)

    def dense(self, name: str, *shape: int) -> torch.Tensor:
        """A small float32 tensor (norms, router): a view when the file stores F32, else converted."""
        t = self._tensor(name, shape)
        if t.type_id == 0:
            return torch.from_numpy(t.data).reshape(shape)
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return self._quant(t, (rows, shape[-1])).dequantize().reshape(shape)

    def has(self, name: str) -> bool:
        return name in self.ckpt.tensors


def _put(module: nn.Module, name: str, value: object) -> None:
    """Replace a (meta) parameter by a tensor or a quantized weight (a plain attribute, not a Parameter)."""
    module._parameters.pop(name, None)
    setattr(module, name, value)


def place_weights(model: nn.Module, ckpt: GgufCheckpoint, config: ModelConfig) -> list[str]:
    """Fill every weight of ``model`` (built on the meta device) from ``ckpt``; returns the unused tensors."""
    p = _Placer(ckpt)
    hidden, vocab = config.hidden_size, config.vocab_size
    net = model.model
    _put(net.embed_tokens, "weight", p.quant("token_embd.weight", vocab, hidden))
    _put(net.norm, "weight", p.dense("output_norm.weight", hidden))
    if config.tie_word_embeddings:
        _put(model.lm_head, "weight", net.embed_tokens.weight)
    else:
        _put(model.lm_head, "weight", p.quant("output.weight", vocab, hidden))
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    for i, layer in enumerate(net.layers):
        b = f"blk.{i}."
        attn = layer.self_attn
        _put(layer.input_layernorm, "weight", p.dense(b + "attn_norm.weight", hidden))
        _put(layer.post_attention_layernorm, "weight", p.dense(b + "ffn_norm.weight", hidden))
        _put(attn.qkv_proj, "weight", QuantGroup((p.quant(b + "attn_q.weight", q, hidden),
                                                   p.quant(b + "attn_k.weight", kv, hidden),
                                                   p.quant(b + "attn_v.weight", kv, hidden))))
        if config.attention_bias:
            _put(attn.qkv_proj, "bias", torch.cat([p.dense(b + f"attn_{x}.bias", n)
                                                   for x, n in (("q", q), ("k", kv), ("v", kv))]))
        _put(attn.o_proj, "weight", p.quant(b + "attn_output.weight", hidden, q))
        _put(attn.q_norm, "weight", p.dense(b + "attn_q_norm.weight", config.head_dim))
        _put(attn.k_norm, "weight", p.dense(b + "attn_k_norm.weight", config.head_dim))
        mlp = layer.mlp
        if config.layer_is_moe(i):
            e, inter = config.num_experts, config.moe_intermediate_size
            _put(mlp.gate, "weight", p.dense(b + "ffn_gate_inp.weight", e, hidden))
            _put(mlp, "w13", QuantExperts(p.quant(b + "ffn_gate_exps.weight", e, inter, hidden),
                                          p.quant(b + "ffn_up_exps.weight", e, inter, hidden)))
            _put(mlp, "w2", p.quant(b + "ffn_down_exps.weight", e, hidden, inter))
        else:
            inter = config.intermediate_size
            _put(mlp.gate_up_proj, "weight", QuantGroup((p.quant(b + "ffn_gate.weight", inter, hidden),
                                                         p.quant(b + "ffn_up.weight", inter, hidden))))
            _put(mlp.down_proj, "weight", p.quant(b + "ffn_down.weight", hidden, inter))
    rotary = net.rotary_emb
    rotary.inv_freq = rope_inv_freq(config)[0]
    return sorted(set(ckpt.tensors) - p.used)

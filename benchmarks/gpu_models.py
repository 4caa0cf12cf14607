"""The Qwen3-30B-A3B shape (and a tiny one for CPU smoke runs) with random weights made on the device, for the GPU
benchmarks: bf16 / float32, or block-FP8 as Qwen3-30B-A3B-FP8 stores them; and KV caches with a random history."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels import Kernels
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

QWEN3_30B_A3B: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
TINY = QWEN3_30B_A3B | {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "torch_dtype": "float32",
}
BLOCK_SIZE = 16


def random_model(
    config: ModelConfig, device: torch.device, dtype: torch.dtype, kernels: Kernels | None = None
) -> Qwen3ForCausalLM:
    """The network with random weights made in place on the device (norms ~1, matrices ~1/sqrt(fan_in)); an FP8
    config's projections get N(0, 1) FP8 values with scales 1/sqrt(fan_in), the same distribution."""
    net = Qwen3ForCausalLM(config, device=device, dtype=dtype, kernels=kernels)
    gen = torch.Generator(device=device).manual_seed(0)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if name.endswith("_scale_inv"):
                p.fill_(1.0 / math.sqrt(params[name.removesuffix("_scale_inv")].shape[-1]))
            elif p.dtype == torch.float8_e4m3fn:
                fill_fp8_(p, gen)
            elif p.dim() == 1:
                p.fill_(1.0)
            elif "embed_tokens" in name:
                p.normal_(0.0, 1.0, generator=gen)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=gen)
    return net.eval()


def fill_fp8_(t: torch.Tensor, gen: torch.Generator) -> None:
    """N(0, 1) values rounded to FP8, made one leading slice at a time (no full-size float copy)."""
    for part in t.view(-1, *t.shape[-2:]) if t.dim() > 2 else [t]:
        part.copy_(torch.randn(part.shape, device=t.device, generator=gen).clamp(-448, 448).to(t.dtype))


def fp8_config(cfg: dict[str, Any], block: int) -> dict[str, Any]:
    """The config.json of the FP8 checkpoint of this shape (Qwen's format, routers and lm_head in bf16)."""
    skip = ["lm_head"] + [f"model.layers.{i}.mlp.gate" for i in range(cfg["num_hidden_layers"])]
    return cfg | {
        "quantization_config": {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": [block, block],
            "modules_to_not_convert": skip,
        }
    }


def random_kv_caches(
    config: ModelConfig,
    num_blocks: int,
    device: torch.device,
    dtype: torch.dtype,
    gen: torch.Generator | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """KV caches holding a random history (N(0, 1), rounded to FP8 for an FP8 cache)."""
    caches = allocate_kv_cache(config, num_blocks, BLOCK_SIZE, device, dtype)
    for k_cache, v_cache in caches:
        for cache in (k_cache, v_cache):
            if cache.dtype == torch.float8_e4m3fn:
                fill_fp8_(
                    cache.view(-1, cache.shape[-2], cache.shape[-1]), gen or torch.Generator(device=device)
                )
            else:
                cache.normal_()
    return caches


def write_random_checkpoint(
    out: Path, cfg: dict[str, Any], device: torch.device, *, fp8: bool, kernels: Kernels | None = None
) -> Path:
    """A checkpoint directory of this shape with random weights, made on ``device`` (fast on a GPU) and written in
    the Hugging Face layout, the demo tokenizer (and chat template) beside it: bf16, or block-FP8 in the official
    format (``fp8``: float8_e4m3fn projections with 128x128 ``weight_scale_inv``, routers and lm_head bf16; needs
    a kernel set that keeps FP8 weights, the Triton one on an FP8 GPU or under the interpreter)."""
    from safetensors.torch import save_file

    from qwen3_api.demo.tiny import tiny_config
    from qwen3_api.demo.tokenizer import write_demo_tokenizer
    from qwen3_api.model.loader import checkpoint_layout

    out.mkdir(parents=True, exist_ok=True)
    tok = write_demo_tokenizer(out)
    eos = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    raw = tiny_config(
        dense=False, layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"], experts=cfg["num_experts"],
        top_k=cfg["num_experts_per_tok"], heads=cfg["num_attention_heads"], kv_heads=cfg["num_key_value_heads"],
        head_dim=cfg["head_dim"], intermediate=cfg["intermediate_size"], moe_intermediate=cfg["moe_intermediate_size"],
        vocab=cfg["vocab_size"], dtype="bfloat16", eos_ids=eos, bos_id=eos[1],
        max_position_embeddings=cfg["max_position_embeddings"],
    )  # fmt: skip
    if fp8:
        raw = fp8_config(raw, 128 if cfg["hidden_size"] >= 128 else 16)
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    generation = {"bos_token_id": eos[1], "eos_token_id": eos, "pad_token_id": eos[1], "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    net = random_model(ModelConfig.from_dict(raw), device, torch.bfloat16, kernels)
    if fp8 and not (net.fp8 is not None and net.fp8.keep_fp8):
        raise RuntimeError("the FP8 checkpoint needs a kernel set that keeps FP8 weights (Triton on an FP8 GPU)")
    tensors = {name: t.view().contiguous().cpu() for name, t in checkpoint_layout(net).items()}
    del net
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out

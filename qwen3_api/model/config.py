"""The checkpoint's config.json as a typed config: dense Qwen3 and Qwen3-MoE, default RoPE and YaRN."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qwen3_api.model.errors import ConfigError

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM")
SUPPORTED_ROPE_TYPES = ("default", "yarn")
# The first Qwen3 release advertises max_position_embeddings=40960 (32K context + 8K of generation room) but was
# pretrained on 32,768 positions; YaRN factors are relative to this native length. Later checkpoints (the 2507
# Instruct / Thinking ones: 262,144 positions, rope_theta 1e7, no rope_scaling) mean what they say.
QWEN3_NATIVE_CONTEXT = 32768
QWEN3_ORIGINAL_MAX_POSITIONS = 40960
# YaRN keys transformers reads (besides factor / original_max_position_embeddings)
_YARN_OPTIONAL_KEYS = ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate")

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(value: str | torch.dtype | None, default: torch.dtype = torch.bfloat16) -> torch.dtype:
    """'bfloat16' / 'torch.float32' / a torch.dtype / None|'auto' (-> default) -> torch.dtype."""
    if value is None or value == "auto":
        return default
    if isinstance(value, torch.dtype):
        return value
    name = str(value).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"unsupported dtype {value!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass(slots=True)
class ModelConfig:
    """Every config.json field that changes the function computed by the network."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    # None for plain RoPE, else the normalised YaRN parameters: rope_type, factor,
    # original_max_position_embeddings and whichever optional keys the checkpoint sets
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    torch_dtype: torch.dtype = torch.bfloat16
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    # config.json's quantization_config as written (block FP8: model/fp8.py reads and validates it); None when
    # the checkpoint is not quantized
    quantization_config: dict[str, Any] | None = None
    # the served weights' quantization as catalogs name it: a GGUF file's type mix ("Q4_K_M", set by the loader),
    # "fp8" for block-FP8 checkpoints
    quantization: str | None = None

    @property
    def is_moe(self) -> bool:
        return self.architecture == "Qwen3MoeForCausalLM" and self.num_experts > 0

    def layer_is_moe(self, i: int) -> bool:
        """Whether decoder layer i has a sparse MoE block (else a dense SwiGLU MLP), as transformers decides."""
        return (
            self.is_moe and i not in self.mlp_only_layers and (i + 1) % max(self.decoder_sparse_step, 1) == 0
        )

    @property
    def native_context_len(self) -> int:
        """The context length the model was pretrained on (YaRN scales relative to it), read from the checkpoint:
        YaRN's original length when it ships YaRN, 32,768 for the first Qwen3 release's 40,960, else
        max_position_embeddings (262,144 for the 2507 checkpoints)."""
        if self.rope_scaling is not None:
            return int(self.rope_scaling["original_max_position_embeddings"])
        if self.max_position_embeddings == QWEN3_ORIGINAL_MAX_POSITIONS:
            return QWEN3_NATIVE_CONTEXT
        return self.max_position_embeddings

    def with_max_model_len(self, n: int) -> ModelConfig:
        """A copy able to serve n positions: static YaRN with factor n/native when n exceeds the native length.

        Static YaRN hurts short prompts, so it is switched on only when asked for more than the native context.
        """
        native = self.native_context_len
        if n <= native:
            return self
        scaling = dict(self.rope_scaling or {"rope_type": "yarn"})
        scaling["rope_type"] = "yarn"
        scaling["factor"] = n / native
        scaling["original_max_position_embeddings"] = native
        return dataclasses.replace(
            self, rope_scaling=scaling, max_position_embeddings=max(n, self.max_position_embeddings)
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any], generation_config: dict[str, Any] | None = None) -> ModelConfig:
        """Build from a config.json dict (old HF or transformers-5 spellings)."""
        archs = d.get("architectures") or []
        arch = archs[0] if archs else None
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"unsupported architecture {arch!r} (model_type {d.get('model_type')!r}); "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if d.get("use_sliding_window"):
            raise ConfigError("sliding-window attention (use_sliding_window=true) is not supported")
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"unsupported hidden_act {act!r}; only 'silu' is implemented")
        hidden = int(d["hidden_size"])
        heads = int(d["num_attention_heads"])
        max_pos = int(d.get("max_position_embeddings", 40960))
        rope_theta, rope_scaling = _parse_rope(d, max_pos)
        dtype_name = d.get("torch_dtype", d.get("dtype"))
        is_moe = arch == "Qwen3MoeForCausalLM"
        num_experts = int(d.get("num_experts", d.get("num_local_experts", 0)) or 0) if is_moe else 0
        return cls(
            architecture=arch,
            vocab_size=int(d["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(d.get("intermediate_size", 0) or 0),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or hidden // heads),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=max_pos,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=bool(d.get("attention_bias", False)),
            torch_dtype=parse_dtype(dtype_name),
            num_experts=num_experts,
            num_experts_per_tok=int(d.get("num_experts_per_tok", 0) or 0) if is_moe else 0,
            moe_intermediate_size=int(d.get("moe_intermediate_size", 0) or 0) if is_moe else 0,
            norm_topk_prob=bool(d.get("norm_topk_prob", True)),
            decoder_sparse_step=int(d.get("decoder_sparse_step", 1) or 1),
            mlp_only_layers=[int(i) for i in (d.get("mlp_only_layers") or [])],
            eos_token_ids=_eos_ids(d, generation_config),
            bos_token_id=d.get("bos_token_id"),
            quantization_config=d.get("quantization_config") or None,
            # block-FP8 checkpoints are "fp8" in catalogs (OpenRouter's quantization), even where dequantized
            quantization="fp8" if (d.get("quantization_config") or {}).get("quant_method") == "fp8" else None,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ModelConfig:
        """Read DIR/config.json (and DIR/generation_config.json for the eos ids when present)."""
        path = Path(path)
        config_file = path / "config.json" if path.is_dir() else path
        try:
            d = json.loads(config_file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no config.json in {path}") from None
        gen_file = config_file.parent / "generation_config.json"
        gen = json.loads(gen_file.read_text()) if gen_file.exists() else None
        return cls.from_dict(d, gen)


def _parse_rope(d: dict[str, Any], max_pos: int) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, normalised YaRN dict or None) from rope_theta/rope_scaling or rope_parameters."""
    params = dict(d.get("rope_parameters") or {})
    old = d.get("rope_scaling") or {}
    params = {**old, **params}
    theta = float(params.pop("rope_theta", d.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"unsupported rope type {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type == "default":
        return theta, None
    original = int(d.get("original_max_position_embeddings") or params.get("original_max_position_embeddings") or max_pos)
    factor = params.get("factor")
    scaling: dict[str, Any] = {
        "rope_type": "yarn",
        "factor": float(factor) if factor is not None else max_pos / original,
        "original_max_position_embeddings": original,
    }
    for key in _YARN_OPTIONAL_KEYS:
        if params.get(key) is not None:
            scaling[key] = params[key]
    return theta, scaling


def _eos_ids(d: dict[str, Any], gen: dict[str, Any] | None) -> list[int]:
    value = (gen or {}).get("eos_token_id", d.get("eos_token_id"))
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]

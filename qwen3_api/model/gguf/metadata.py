"""A GGUF file's metadata as the Hugging Face config.json / generation_config.json this project reads.

llama.cpp's converter (conversion/base.py, qwen.py) writes the hyper-parameters under ``{arch}.*`` keys; this is
the inverse mapping for the architectures served here, ``qwen3moe`` and ``qwen3``, including the rope settings
(YaRN keys) and the end-of-generation ids. The quantization is named as llama.cpp's ``general.file_type`` does
(``Q4_K_M``), which is what the catalog reports (OpenRouter's ``quantization``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from qwen3_api.model.gguf.files import GgufCheckpoint, GgufError

ARCHITECTURES = {"qwen3moe": "Qwen3MoeForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# Tokens llama.cpp treats as end of generation by their text (llama-vocab.cpp), besides the eos / eot ids.
_EOG_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>")
# llama.cpp's LLAMA_FTYPE names (gguf.LlamaFileType without the MOSTLY_ / ALL_ prefixes).
_TOKEN_TYPE_UNUSED = 5


def architecture(ckpt: GgufCheckpoint) -> str:
    """general.architecture, checked against what this server runs."""
    arch = ckpt.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GgufError(
            f"{ckpt.files[0].name}: unsupported GGUF architecture {arch!r}; this server runs "
            f"{', '.join(sorted(ARCHITECTURES))} (Qwen3-30B-A3B and the dense Qwen3 models)"
        )
    return str(arch)


def _req(ckpt: GgufCheckpoint, key: str) -> Any:
    value = ckpt.get(key)
    if value is None:
        raise GgufError(f"{ckpt.files[0].name}: metadata key {key!r} is missing")
    return value


def _rope_scaling(ckpt: GgufCheckpoint, arch: str) -> dict[str, Any] | None:
    kind = ckpt.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    if kind != "yarn":
        raise GgufError(f"{ckpt.files[0].name}: unsupported rope scaling {kind!r} (supported: yarn)")
    scaling: dict[str, Any] = {
        "rope_type": "yarn",
        "factor": float(_req(ckpt, f"{arch}.rope.scaling.factor")),
        "original_max_position_embeddings": int(_req(ckpt, f"{arch}.rope.scaling.original_context_length")),
    }
    for gguf_key, hf_key in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow"),
                             ("yarn_attn_factor", "attention_factor")):
        value = ckpt.get(f"{arch}.rope.scaling.{gguf_key}")
        if value is not None:
            scaling[hf_key] = float(value)
    return scaling


def hf_config(ckpt: GgufCheckpoint) -> dict[str, Any]:
    """The config.json of the model in the file (old HF spellings, as the real checkpoints write them)."""
    arch = architecture(ckpt)
    heads = int(_req(ckpt, f"{arch}.attention.head_count"))
    hidden = int(_req(ckpt, f"{arch}.embedding_length"))
    tokens = ckpt.get("tokenizer.ggml.tokens")
    vocab = ckpt.get(f"{arch}.vocab_size") or (len(tokens) if tokens else None)
    if vocab is None and "token_embd.weight" in ckpt.tensors:
        vocab = ckpt.tensors["token_embd.weight"].ne[1]
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[arch]],
        "model_type": "qwen3_moe" if arch == "qwen3moe" else "qwen3",
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(ckpt.get(f"{arch}.feed_forward_length") or 0),
        "num_hidden_layers": int(_req(ckpt, f"{arch}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(ckpt.get(f"{arch}.attention.head_count_kv") or heads),
        "head_dim": int(ckpt.get(f"{arch}.attention.key_length") or hidden // heads),
        "rms_norm_eps": float(ckpt.get(f"{arch}.attention.layer_norm_rms_epsilon") or 1e-6),
        "rope_theta": float(ckpt.get(f"{arch}.rope.freq_base") or 10000.0),
        "rope_scaling": _rope_scaling(ckpt, arch),
        "max_position_embeddings": int(_req(ckpt, f"{arch}.context_length")),
        # no output.weight: the head is the embedding (llama.cpp's rule)
        "tie_word_embeddings": "output.weight" not in ckpt.tensors,
        "attention_bias": "blk.0.attn_q.bias" in ckpt.tensors,
        "hidden_act": "silu",
        "torch_dtype": "float32",  # the compute dtype of the quantized CPU path
        "bos_token_id": ckpt.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": ckpt.get("tokenizer.ggml.eos_token_id"),
    }
    if arch == "qwen3moe":
        config.update(
            num_experts=int(_req(ckpt, f"{arch}.expert_count")),
            num_experts_per_tok=int(_req(ckpt, f"{arch}.expert_used_count")),
            moe_intermediate_size=int(_req(ckpt, f"{arch}.expert_feed_forward_length")),
            # llama.cpp renormalises the top-k weights of qwen3moe unconditionally (as Qwen3-30B-A3B's config
            # says); a file may say otherwise with expert_weights_norm
            norm_topk_prob=bool(ckpt.get(f"{arch}.expert_weights_norm", True)),
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
    return config


def eos_token_ids(ckpt: GgufCheckpoint) -> list[int]:
    """Every id that ends generation: eos, eot, and the control tokens llama.cpp ends on by their text (for
    Qwen3 <|im_end|> and <|endoftext|>, the two ids of the checkpoint's generation_config.json)."""
    ids: list[int] = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if ckpt.get(key) is not None:
            ids.append(int(ckpt.get(key)))
    tokens = ckpt.get("tokenizer.ggml.tokens") or []
    types = ckpt.get("tokenizer.ggml.token_type") or []
    for text in _EOG_TEXTS:
        for i in (i for i, t in enumerate(tokens) if t == text):
            if i < len(types) and types[i] == 3:  # CONTROL
                ids.append(i)
    return list(dict.fromkeys(ids))


def generation_config(ckpt: GgufCheckpoint) -> dict[str, Any]:
    """generation_config.json: the end-of-generation ids and the sampling defaults the file carries."""
    gen: dict[str, Any] = {"eos_token_id": eos_token_ids(ckpt)}
    if ckpt.get("tokenizer.ggml.bos_token_id") is not None:
        gen["bos_token_id"] = int(ckpt.get("tokenizer.ggml.bos_token_id"))
    for key, name in (("temp", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"), ("min_p", "min_p")):
        value = ckpt.get(f"general.sampling.{key}")
        if value is not None:
            gen[name] = value
    return gen


def file_type_name(ckpt: GgufCheckpoint) -> str:
    """The quantization as llama.cpp names it (general.file_type: Q4_K_M, Q8_0, BF16 ...); without that key,
    the most common type among the 2-D weights."""
    import gguf

    ftype = ckpt.get("general.file_type")
    if ftype is not None:
        try:
            name = gguf.LlamaFileType(int(ftype)).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts = Counter(t.type_id for t in ckpt.tensors.values() if len(t.ne) >= 2)
    if not counts:
        return "unknown"
    return gguf.GGMLQuantizationType(counts.most_common(1)[0][0]).name

"""Random-weight checkpoints in the real Hugging Face format, and the built-in demo model.

`qwen3-api make-tiny-model DIR` writes config.json (with the old spellings of the real Qwen3-30B-A3B
checkpoint), generation_config.json, model.safetensors with the real tensor names, and tokenizer files:
a copy of --tokenizer, or the demo tokenizer (tokenizer.py) with its own Qwen3 chat template.
``--variant 2507-instruct|2507-thinking`` writes the config, chat template and sampling defaults of that
checkpoint generation (variants.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

# `qwen3-api` imports this module to register its subcommand: torch, tokenizers and safetensors are
# imported inside the functions that use them so `qwen3-api --help` does not wait for them.
if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

    from qwen3_api.model.config import ModelConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
DEMO_MODEL = {"layers": 2, "hidden": 64, "experts": 8, "top_k": 2, "dtype": "float32"}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _tokenizer_vocab(tokenizer_dir: Path, tok: Tokenizer) -> int:
    """The checkpoint vocab for a copied tokenizer: the one its config.json declares when it has one
    (the real Qwen3 pads to 151,936), else the tokenizer size rounded up to a multiple of 64."""
    size = tok.get_vocab_size(with_added_tokens=True)
    config = tokenizer_dir / "config.json"
    if config.exists():
        declared = json.loads(config.read_text()).get("vocab_size")
        if isinstance(declared, int) and declared >= size:
            return declared
    return _round_up(size, 64)


def tiny_config(
    *,
    dense: bool,
    layers: int,
    hidden: int,
    experts: int,
    top_k: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    moe_intermediate: int,
    vocab: int,
    dtype: str,
    eos_ids: list[int],
    bos_id: int | None,
    max_position_embeddings: int = 40960,
    tie_word_embeddings: bool = False,
    rope_theta: float = 1_000_000.0,
) -> dict[str, Any]:
    """config.json in the spelling of the real checkpoint (rope_theta, rope_scaling, num_experts, torch_dtype)."""
    config: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM" if dense else "Qwen3MoeForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids[0] if eos_ids else None,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": layers,
        "model_type": "qwen3" if dense else "qwen3_moe",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }
    if not dense:
        config |= {
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "moe_intermediate_size": moe_intermediate,
            "norm_topk_prob": True,
            "num_experts": experts,
            "num_experts_per_tok": top_k,
            "output_router_logits": False,
            "router_aux_loss_coef": 0.001,
        }
    return dict(sorted(config.items()))


def random_weights(config: ModelConfig, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every checkpoint tensor, random but with unit-scale activations (so logits are not all alike)."""
    import torch

    from qwen3_api.model.loader import expected_tensors

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sorted(expected_tensors(config).items()):
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name == "model.embed_tokens.weight":
            t = torch.randn(shape, generator=gen)
        else:
            t = torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
        tensors[name] = t.to(dtype).contiguous()
    return tensors


def make_tiny_model(
    out_dir: str | Path,
    *,
    dense: bool = False,
    layers: int = 2,
    hidden: int = 64,
    experts: int = 8,
    top_k: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 16,
    intermediate: int = 128,
    moe_intermediate: int = 32,
    vocab: int | None = None,
    tokenizer_dir: str | Path | None = None,
    dtype: str = "bfloat16",
    max_position_embeddings: int | None = None,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    variant: str = "original",
) -> Path:
    """Write a random-weight Qwen3(-MoE) checkpoint with a tokenizer into out_dir; deterministic per seed.

    ``variant`` (original | 2507-instruct | 2507-thinking) sets max_position_embeddings (unless given), rope_theta,
    the chat template and generation_config.json's sampling as that checkpoint generation has them."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    from qwen3_api.demo.tokenizer import write_demo_tokenizer
    from qwen3_api.demo.variants import get_variant
    from qwen3_api.model.config import ModelConfig, parse_dtype

    kind = get_variant(variant)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        src = Path(tokenizer_dir)
        if not (src / "tokenizer.json").exists():
            raise FileNotFoundError(f"no tokenizer.json in {src}")
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copyfile(src / name, out / name)
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        default_vocab = _tokenizer_vocab(src, tok)
    else:
        tok = write_demo_tokenizer(out)
        default_vocab = _round_up(tok.get_vocab_size(with_added_tokens=True), 64)
    size = tok.get_vocab_size(with_added_tokens=True)
    vocab = vocab or default_vocab
    if vocab < size:
        raise ValueError(f"vocab {vocab} is smaller than the tokenizer ({size} tokens)")
    eos_ids = [i for i in (tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")) if i is not None]
    pad_id = tok.token_to_id("<|endoftext|>")
    torch_dtype = parse_dtype(dtype)
    config_dict = tiny_config(
        dense=dense, layers=layers, hidden=hidden, experts=experts, top_k=top_k, heads=heads, kv_heads=kv_heads,
        head_dim=head_dim, intermediate=intermediate, moe_intermediate=moe_intermediate, vocab=vocab,
        dtype=str(torch_dtype).removeprefix("torch."), eos_ids=eos_ids, bos_id=pad_id,
        max_position_embeddings=max_position_embeddings or kind.max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings, rope_theta=kind.rope_theta,
    )  # fmt: skip
    if kind.name != "original":
        tok_config_path = out / "tokenizer_config.json"
        tok_config = json.loads(tok_config_path.read_text(encoding="utf-8"))
        tok_config["chat_template"] = kind.chat_template()
        tok_config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    generation = {
        "bos_token_id": pad_id,
        "do_sample": True,
        "eos_token_id": eos_ids,
        "pad_token_id": pad_id,
        **kind.generation,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    config = ModelConfig.from_dict(config_dict)
    save_file(random_weights(config, seed, torch_dtype), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def default_cache_dir() -> Path:
    """$QWEN3_API_CACHE, else ~/.cache/qwen3-api."""
    env = os.environ.get("QWEN3_API_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "qwen3-api"


def ensure_demo_model(cache_dir: str | Path | None = None) -> Path:
    """The built-in demo model (a small MoE with the demo tokenizer), created once under the cache dir.

    Built in a temporary directory beside it and renamed into place, so a concurrent or interrupted run never
    leaves a half-written model behind.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = base / "demo-model"
    if (final / "model.safetensors").exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-model-", dir=base))
    try:
        make_tiny_model(tmp, **DEMO_MODEL)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "model.safetensors").exists():
                raise  # not a lost race with another process: a real failure
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `make-tiny-model` to the qwen3-api command."""
    p = subparsers.add_parser(
        "make-tiny-model",
        help="write a random-weight Qwen3(-MoE) checkpoint in the real HF format",
        description=make_tiny_model.__doc__,
    )
    p.add_argument("dir", type=Path, help="output directory")
    p.add_argument("--dense", action="store_true", help="Qwen3ForCausalLM instead of Qwen3MoeForCausalLM")
    p.add_argument("--layers", type=int, default=2, help="decoder layers")
    p.add_argument("--hidden", type=int, default=64, help="hidden size")
    p.add_argument("--experts", type=int, default=8, help="experts per MoE layer")
    p.add_argument("--top-k", type=int, default=2, help="experts per token")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads (GQA)")
    p.add_argument("--head-dim", type=int, default=16, help="size of one attention head")
    p.add_argument("--intermediate", type=int, default=128, help="dense MLP width")
    p.add_argument("--moe-intermediate", type=int, default=32, help="expert MLP width")
    p.add_argument("--vocab", type=int, default=None, help="default: the tokenizer's size (padded)")
    p.add_argument("--max-position-embeddings", type=int, default=None,
                   help="config.json's max_position_embeddings (default: the variant's, 40960 for the original, "
                        "262144 for 2507)")
    p.add_argument("--variant", default="original", choices=["original", "2507-instruct", "2507-thinking"],
                   help="checkpoint generation to imitate: config, chat template and sampling defaults")
    p.add_argument("--tie-word-embeddings", action="store_true")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"],
                   help="dtype of the stored weights")
    p.add_argument("--tokenizer", type=Path, default=None, help="copy this tokenizer (default: the demo one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = make_tiny_model(
        args.dir, dense=args.dense, layers=args.layers, hidden=args.hidden, experts=args.experts,
        top_k=args.top_k, heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
        intermediate=args.intermediate, moe_intermediate=args.moe_intermediate, vocab=args.vocab,
        tokenizer_dir=args.tokenizer, dtype=args.dtype, max_position_embeddings=args.max_position_embeddings,
        tie_word_embeddings=args.tie_word_embeddings, seed=args.seed, variant=args.variant,
    )  # fmt: skip
    print(f"wrote {out}")
    return 0

"""Block-FP8 checkpoints in the official Qwen format, made from unquantized ones (tiny ones for the tests).

``quantize_checkpoint(src, out)`` writes what Qwen/Qwen3-30B-A3B-FP8 ships, on any checkpoint this server loads:
config.json with ``quantization_config = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
"weight_block_size": [128, 128], "modules_to_not_convert": [lm_head, each layer's norms and router]}``, every
attention, MLP and expert projection as float8_e4m3fn with its ``weight_scale_inv`` (amax / 448 per block), the
rest (embeddings, norms, routers, lm_head) as they were. Tokenizer and generation files are copied.

    python -m qwen3_api.demo.tiny_fp8 SRC_DIR OUT_DIR [--block 128 128] [--scale-dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from qwen3_api.kernels.fp8_blocks import quantize
from qwen3_api.model.config import ModelConfig

QWEN_BLOCK = (128, 128)
# the projections Qwen's FP8 checkpoints convert: attention, dense MLP and every expert
_CONVERTED_SUFFIXES = ("_proj.weight",)


def not_converted(config: ModelConfig) -> list[str]:
    """modules_to_not_convert as Qwen writes it: lm_head, and per layer both norms and (MoE) the router."""
    names = ["lm_head"]
    for i in range(config.num_hidden_layers):
        names += [f"model.layers.{i}.input_layernorm", f"model.layers.{i}.post_attention_layernorm"]
        if config.layer_is_moe(i):
            names.append(f"model.layers.{i}.mlp.gate")
    return names


def quantize_tensors(
    tensors: dict[str, torch.Tensor], block: tuple[int, int], scale_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with every projection weight replaced by its FP8 weight and weight_scale_inv."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if t.dim() == 2 and name.endswith(_CONVERTED_SUFFIXES):
            weight, scale = quantize(t, block)
            out[name] = weight
            out[name.removesuffix(".weight") + ".weight_scale_inv"] = scale.to(scale_dtype).contiguous()
        else:
            out[name] = t
    return out


def quantize_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    block: tuple[int, int] = QWEN_BLOCK,
    scale_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the block-FP8 version of the checkpoint in ``src`` to ``out`` (one model.safetensors)."""
    from safetensors.torch import load_file, save_file

    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
            shutil.copyfile(f, out / f.name)
    raw = json.loads((src / "config.json").read_text())
    config = ModelConfig.from_dict(raw)
    raw["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": list(block),
        "modules_to_not_convert": not_converted(config),
    }
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(src.glob("*.safetensors")):
        tensors |= load_file(str(f))
    save_file(
        quantize_tensors(tensors, block, scale_dtype),
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return out


# A tiny MoE whose merged projections are whole 128-row blocks (q 256 rows, k and v 128 each), so the Triton set
# keeps them in FP8, with a hidden size of 1.5 blocks and an expert width of half a block (partial blocks on
# both axes, and w13's gate and up scales at their own rows).
TINY_FP8 = {"hidden": 192, "heads": 4, "kv_heads": 2, "head_dim": 64, "experts": 4, "top_k": 2,
            "moe_intermediate": 64, "intermediate": 256, "dtype": "bfloat16"}  # fmt: skip


def make_tiny_fp8_model(
    out_dir: str | Path,
    *,
    block: tuple[int, int] = QWEN_BLOCK,
    scale_dtype: torch.dtype = torch.float32,
    **tiny: object,
) -> Path:
    """A random tiny checkpoint (demo/tiny.py; TINY_FP8 unless overridden) written in the official FP8 format."""
    import tempfile

    from qwen3_api.demo.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        src = make_tiny_model(Path(tmp) / "bf16", **{**TINY_FP8, **tiny})  # type: ignore[arg-type]
        return quantize_checkpoint(src, out_dir, block=block, scale_dtype=scale_dtype)


def main(argv: list[str] | None = None) -> int:
    """python -m qwen3_api.demo.tiny_fp8 SRC OUT: quantize a checkpoint directory to block FP8."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--block", type=int, nargs=2, default=list(QWEN_BLOCK))
    parser.add_argument("--scale-dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    path = quantize_checkpoint(
        args.src, args.out, block=tuple(args.block), scale_dtype=getattr(torch, args.scale_dtype)
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

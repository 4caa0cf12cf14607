"""Write a valid Q4_K_M GGUF of the real Qwen3-30B-A3B's exact shape, with random weights (~17 GB, minutes).

Both engines then pay the real model's cost (48 layers, 128 experts of width 768 with 8 active, hidden 2048,
32 / 4 heads of 128, vocabulary 151,936) on a machine that cannot hold the bf16 checkpoint. The weights are not
quantized from floats (hours for 30 B parameters): each tensor is written as valid ggml blocks directly, cut
from a pool of random blocks per type (quant_types.random_blocks: random quants, finite fp16 scales giving
weights of spread ~0.02) at a random block offset, tensor by tensor, so the writer never holds more than the
largest tensor (the Q6_K output matrix, ~255 MB). Tensors share content, but every byte is its own page of the
file: the memory traffic and the compute are the real model's.

Tensor types are those llama.cpp's ``llama-quantize ... Q4_K_M`` chooses for qwen3moe (src/llama-quant.cpp,
``llama_tensor_get_type``; checked against the tool itself on the small MoE, see ``--check``): Q4_K by default;
output.weight Q6_K; attn_v and ffn_down_exps Q6_K on the layers ``use_more_bits`` picks (the first and last
eighth, and every third between), else Q4_K; attn_output Q4_K (its Q5_K bump is for 8-expert models only);
norms and the router (ffn_gate_inp) F32.

The metadata (tokenizer, chat template, ...) is copied from a template GGUF made by llama.cpp's
convert_hf_to_gguf.py (any Qwen3 MoE one, e.g. the small benchmark MoE), with the hyper-parameters replaced:

    python benchmarks/gguf_make_real_shape.py --template /work/gguf_bench/small-f32.gguf \\
        --out /work/bigmodel/qwen3-30b-a3b-shape-Q4_K_M.gguf
    # check the type rule against llama-quantize's choice on a file it quantized:
    python benchmarks/gguf_make_real_shape.py --check /work/gguf_bench/small-Q4_K_M.gguf
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from qwen3_api.kernels.quant_types import SUPPORTED_TYPES, random_blocks  # noqa: E402

# Qwen/Qwen3-30B-A3B's config.json
REAL = dict(layers=48, hidden=2048, experts=128, top_k=8, heads=32, kv_heads=4, head_dim=128,
            moe_inter=768, dense_inter=6144, vocab=151936, context=40960, rope_theta=1e6, eps=1e-6)
# benchmarks/offline_throughput.py's small MoE (profiling without the 17 GB file)
SMALL = dict(REAL, layers=8, hidden=512, experts=32, top_k=4, heads=8, kv_heads=4, head_dim=64, moe_inter=256,
             dense_inter=1024)
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15
POOL_MARGIN = 32 << 20  # a type's pool: its largest tensor + this, so tensors start at varied offsets


def use_more_bits(i: int, n: int) -> bool:
    """llama-quant.cpp's use_more_bits: the layers Q4_K_M gives 6 bits (attn_v, ffn_down)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k_m_type(name: str, n_layers: int) -> str:
    """The type llama-quantize's Q4_K_M gives a qwen3moe tensor (128 experts; 2-D+ tensors only)."""
    if name == "output.weight":
        return "Q6_K"
    if name.startswith("blk.") and (name.endswith("attn_v.weight") or name.endswith("ffn_down_exps.weight")):
        return "Q6_K" if use_more_bits(int(name.split(".")[1]), n_layers) else "Q4_K"
    if name.endswith("_norm.weight") or name.endswith("ffn_gate_inp.weight"):
        return "F32"
    return "Q4_K"


def tensor_specs(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy-order shape) of every tensor of a qwen3moe model of shape ``s``, in the converter's order."""
    h, e, mi, q, kv = s["hidden"], s["experts"], s["moe_inter"], s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    specs = [("output.weight", (s["vocab"], h)), ("token_embd.weight", (s["vocab"], h))]
    for i in range(s["layers"]):
        b = f"blk.{i}."
        specs += [(b + "attn_norm.weight", (h,)), (b + "ffn_down_exps.weight", (e, h, mi)),
                  (b + "ffn_gate_exps.weight", (e, mi, h)), (b + "ffn_up_exps.weight", (e, mi, h)),
                  (b + "ffn_gate_inp.weight", (e, h)), (b + "ffn_norm.weight", (h,)),
                  (b + "attn_k_norm.weight", (s["head_dim"],)), (b + "attn_k.weight", (kv, h)),
                  (b + "attn_output.weight", (h, q)), (b + "attn_q_norm.weight", (s["head_dim"],)),
                  (b + "attn_q.weight", (q, h)), (b + "attn_v.weight", (kv, h))]
    specs.append(("output_norm.weight", (h,)))
    return specs


def check(path: Path) -> int:
    """Compare q4_k_m_type with the types llama-quantize wrote into ``path``; 0 when all agree."""
    import gguf

    reader = gguf.GGUFReader(path)
    n = int(reader.get_field("qwen3moe.block_count").contents())
    bad = 0
    for t in reader.tensors:
        want = q4_k_m_type(t.name, n)
        if t.tensor_type.name != want:
            print(f"MISMATCH {t.name}: llama-quantize chose {t.tensor_type.name}, our rule says {want}")
            bad += 1
    print(f"{len(reader.tensors) - bad} of {len(reader.tensors)} tensor types agree with llama-quantize ({path.name})")
    return 1 if bad else 0


def metadata(writer, template: Path, s: dict) -> None:  # noqa: ANN001
    """Copy the template's key/values (tokenizer, template, ...), replacing the hyper-parameters."""
    import gguf

    reader = gguf.GGUFReader(template)
    arch = "qwen3moe"
    ours = {
        f"{arch}.block_count": s["layers"], f"{arch}.context_length": s["context"],
        f"{arch}.embedding_length": s["hidden"], f"{arch}.feed_forward_length": s["dense_inter"],
        f"{arch}.attention.head_count": s["heads"], f"{arch}.attention.head_count_kv": s["kv_heads"],
        f"{arch}.rope.freq_base": s["rope_theta"], f"{arch}.attention.layer_norm_rms_epsilon": s["eps"],
        f"{arch}.expert_count": s["experts"], f"{arch}.expert_used_count": s["top_k"],
        f"{arch}.attention.key_length": s["head_dim"], f"{arch}.attention.value_length": s["head_dim"],
        f"{arch}.expert_feed_forward_length": s["moe_inter"], "general.file_type": LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "general.name": "Qwen3-30B-A3B shape (random weights)" if s["experts"] == 128 else "small MoE (random)",
    }
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = ours.pop(field.name, field.contents())
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for key, value in ours.items():
        vtype = gguf.GGUFValueType.FLOAT32 if isinstance(value, float) else (
            gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.UINT32)
        writer.add_key_value(key, value, vtype)


def float_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> np.ndarray:
    if name.endswith("ffn_gate_inp.weight"):
        return (torch.randn(shape, generator=gen) * 0.02).numpy()
    return (1.0 + 0.05 * torch.randn(shape, generator=gen)).numpy()  # norms: ~1, as trained ones are


def write(out: Path, template: Path, s: dict, seed: int) -> None:
    import gguf

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    specs = tensor_specs(s)
    pools: dict[str, np.ndarray] = {}
    for tname in ("Q4_K", "Q6_K"):
        qt = SUPPORTED_TYPES[tname]
        largest = max(int(np.prod(shape[:-1])) * qt.row_bytes(shape[-1]) for name, shape in specs
                      if q4_k_m_type(name, s["layers"]) == tname)
        rows = (largest + POOL_MARGIN) // qt.row_bytes(256)
        pools[tname] = random_blocks(qt, rows, 256, gen).numpy()  # rows of one block: a flat run of blocks
    writer = gguf.GGUFWriter(out, "qwen3moe")
    metadata(writer, template, s)
    total = 0
    for name, shape in specs:
        tname = q4_k_m_type(name, s["layers"])
        if tname == "F32":
            writer.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
            total += int(np.prod(shape)) * 4
            continue
        qt = SUPPORTED_TYPES[tname]
        byte_shape = (*shape[:-1], qt.row_bytes(shape[-1]))
        nbytes = int(np.prod(byte_shape))
        writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes,
                               raw_dtype=gguf.GGMLQuantizationType[tname])
        total += nbytes
    print(f"writing {out} ({total / 2**30:.2f} GiB, {len(specs)} tensors)", flush=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    start = time.time()
    done = 0
    for name, shape in specs:
        tname = q4_k_m_type(name, s["layers"])
        if tname == "F32":
            data = float_tensor(name, shape, gen)
        else:
            qt = SUPPORTED_TYPES[tname]
            pool = pools[tname]
            nbytes = int(np.prod(shape[:-1])) * qt.row_bytes(shape[-1])
            nblocks_pool, nblocks = len(pool) // qt.block_bytes, nbytes // qt.block_bytes
            off = int(rng.integers(0, nblocks_pool - nblocks + 1)) * qt.block_bytes
            data = pool[off:off + nbytes]
        writer.write_tensor_data(data)
        done += data.nbytes
        if name.endswith("attn_v.weight") and name.split(".")[1].isdigit() and int(name.split(".")[1]) % 8 == 7:
            print(f"  {done / 2**30:.1f} GiB, {time.time() - start:.0f} s", flush=True)
    writer.close()
    print(f"done: {out.stat().st_size / 2**30:.2f} GiB in {time.time() - start:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--template", type=Path, help="a qwen3moe GGUF from convert_hf_to_gguf.py (metadata source)")
    ap.add_argument("--out", type=Path, help="the file to write (outside the repo: ~17 GB)")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers: a smaller file, same widths")
    ap.add_argument("--shape", choices=("real", "small"), default="real", help="small: the benchmarks' small MoE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=Path, help="only compare the type rule with a llama-quantize Q4_K_M file")
    args = ap.parse_args()
    if args.check:
        return check(args.check)
    if not args.template or not args.out:
        ap.error("--template and --out are required (or --check FILE)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shape = REAL if args.shape == "real" else SMALL
    write(args.out, args.template, {**shape, "layers": args.layers or shape["layers"]}, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tune the fused-MoE block sizes on the local GPU and write the table ``triton_moe`` looks up.

    python benchmarks/tune_moe.py                      # Qwen3-30B-A3B shape, bf16, all batch buckets
    python benchmarks/tune_moe.py --batch-sizes 1 64   # a subset (the rest keep no entry)

For each batch size it times the whole MoE layer (align + both grouped GEMMs + top-k sum) with uniform random
routing for every candidate config, checks the winner against the torch reference, and writes
``qwen3_api/kernels/moe_configs/E=..,N=..,dtype=..,device_name=<this GPU>.json`` in this checkout (commit it:
the package ships the tables). The full default space takes on the order of tens of minutes on an H200.
A tool, not part of the runtime package (as vLLM's benchmarks/kernels/benchmark_moe.py).

``--cpu-smoke`` runs a tiny shape with two candidates through the Triton interpreter, so CI exercises the
script end to end; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout, installed or not

DEFAULT_BATCH_SIZES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096]


def candidate_configs(m: int, num_experts: int, top_k: int) -> list[dict[str, int]]:
    """The search space for m tokens; tile heights beyond the tokens per expert are pruned."""
    tokens_per_expert = max(1, m * top_k // num_experts)
    block_ms = [bm for bm in (16, 32, 64, 128) if bm <= max(16, 2 * tokens_per_expert)]
    configs = []
    for bm, bn, bk, group, warps, stages in itertools.product(
        block_ms, (32, 64, 128, 256), (64, 128, 256), (1, 16), (4, 8), (2, 3, 4, 5)
    ):
        if bk == 256 and stages > 3:
            continue  # needs more shared memory than a Hopper SM has with these tiles
        if warps == 8 and bm * bn < 64 * 64:
            continue  # too little work per warp
        configs.append(
            {
                "BLOCK_SIZE_M": bm,
                "BLOCK_SIZE_N": bn,
                "BLOCK_SIZE_K": bk,
                "GROUP_SIZE_M": group,
                "num_warps": warps,
                "num_stages": stages,
            }
        )
    return configs


def smoke_configs() -> list[dict[str, int]]:
    return [
        {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 16, "GROUP_SIZE_M": 1},
        {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 2},
    ]


def make_inputs(
    m: int, hidden: int, inter: int, num_experts: int, top_k: int, dtype: torch.dtype, device: str
) -> tuple[torch.Tensor, ...]:
    """Random activations, weights and uniform random routing for one MoE layer."""
    gen = torch.Generator(device=device).manual_seed(m)
    x = torch.randn(m, hidden, device=device, generator=gen).to(dtype)
    w13 = (torch.randn(num_experts, 2 * inter, hidden, device=device, generator=gen) / hidden**0.5).to(dtype)
    w2 = (torch.randn(num_experts, hidden, inter, device=device, generator=gen) / inter**0.5).to(dtype)
    logits = torch.randn(m, num_experts, device=device, generator=gen)
    weights, ids = torch.topk(logits.softmax(-1), top_k, dim=-1)
    return x, w13, w2, weights / weights.sum(-1, keepdim=True), ids


def time_config(fn, smoke: bool) -> float:  # noqa: ANN001
    """Mean microseconds per call: CUDA events via triton's do_bench on a GPU, a wall clock in smoke mode."""
    if smoke:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e6
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=50)) * 1e3


def tune(
    batch_sizes: list[int],
    *,
    hidden: int,
    inter: int,
    num_experts: int,
    top_k: int,
    dtype: torch.dtype,
    device: str,
    smoke: bool,
) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """{batch size: best config} and {batch size: its microseconds per layer}."""
    # after main() has set TRITON_INTERPRET for --cpu-smoke: triton reads it when first imported
    from qwen3_api.kernels import torch_moe
    from qwen3_api.kernels.triton_moe import fused_moe

    best: dict[str, dict[str, int]] = {}
    timings: dict[str, float] = {}
    for m in batch_sizes:
        inputs = make_inputs(m, hidden, inter, num_experts, top_k, dtype, device)
        results = []
        configs = smoke_configs() if smoke else candidate_configs(m, num_experts, top_k)
        for config in configs:
            try:
                us = time_config(
                    lambda config=config, inputs=inputs: fused_moe(*inputs, config=config), smoke
                )
            except Exception as exc:  # noqa: BLE001 (a config the compiler rejects, e.g. out of shared memory)
                print(f"  m={m} skip {config}: {type(exc).__name__}", file=sys.stderr)
                continue
            results.append((us, config))
        if not results:
            raise RuntimeError(f"no candidate config ran for batch size {m}")
        us, config = min(results, key=lambda r: r[0])
        got = fused_moe(*inputs, config=config).float()
        ref = torch_moe.fused_moe(*inputs).float()
        err = ((got - ref).norm() / ref.norm().clamp_min(1e-12)).item()
        if err > (1e-4 if dtype == torch.float32 else 3e-2):
            raise RuntimeError(f"best config for m={m} gives relative error {err:.3g}: {config}")
        best[str(m)], timings[str(m)] = config, round(us, 2)
        print(f"m={m:5d}  {us:9.1f} us  rel.err {err:.1e}  {config}")
    return best, timings


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2: no GPU and no --cpu-smoke)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-experts", type=int, default=128)
    parser.add_argument("--intermediate", type=int, default=768, help="moe_intermediate_size (N)")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=DEFAULT_BATCH_SIZES)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: the package's moe_configs/")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny shapes on CPU via the Triton interpreter"
    )
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        args.num_experts, args.intermediate, args.hidden, args.top_k = 4, 32, 32, 2
        args.dtype = "fp32" if args.dtype == "bf16" else args.dtype
        if args.batch_sizes == DEFAULT_BATCH_SIZES:
            args.batch_sizes = [1, 4]
        device, device_name = "cpu", "cpu"
    elif not torch.cuda.is_available():
        print("tune_moe needs a CUDA GPU (or --cpu-smoke for a functional check on CPU)", file=sys.stderr)
        return 2
    else:
        device, device_name = "cuda", torch.cuda.get_device_name().replace(" ", "_")

    from qwen3_api.kernels.moe_config_table import CONFIG_DIR, config_file_name

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    best, timings = tune(
        args.batch_sizes,
        hidden=args.hidden,
        inter=args.intermediate,
        num_experts=args.num_experts,
        top_k=args.top_k,
        dtype=dtype,
        device=device,
        smoke=args.cpu_smoke,
    )
    out_dir = args.out_dir or CONFIG_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / config_file_name(args.num_experts, args.intermediate, dtype, device_name)
    doc = {
        "comment": f"Tuned by benchmarks/tune_moe.py on {device_name} "
        f"(torch {torch.__version__}); timings are one MoE layer in microseconds.",
        "tuned_here": not args.cpu_smoke,
        "shape": {
            "num_experts": args.num_experts,
            "intermediate_size": args.intermediate,
            "hidden_size": args.hidden,
            "top_k": args.top_k,
            "dtype": args.dtype,
        },
        "configs": best,
        "timings_us": timings,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

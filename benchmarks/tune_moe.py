"""Tune the fused-MoE block sizes on the local GPU and write the table ``triton_moe`` looks up.

    python benchmarks/tune_moe.py                      # Qwen3-30B-A3B shape, bf16, all batch buckets
    python benchmarks/tune_moe.py --batch-sizes 1 64   # a subset (the rest keep no entry)
    python benchmarks/tune_moe.py --dtype fp8 --space quick --batch-sizes 1 64 256   # block-FP8 experts, fast

For each batch size it times the whole MoE layer (align + both grouped GEMMs + top-k sum) with uniform random
routing for every candidate config, checks the winner against the torch reference, and writes
``qwen3_api/kernels/moe_configs/E=..,N=..,dtype=..,device_name=<this GPU>.json`` in this checkout (commit it:
the package ships the tables). The full default space takes on the order of tens of minutes on an H200.
A tool, not part of the runtime package (as vLLM's benchmarks/kernels/benchmark_moe.py).

``--dtype fp8`` tunes the block-FP8 W8A8 MoE (triton_fp8_moe.py: Qwen3-30B-A3B-FP8's experts, 128x128 weight
blocks, so BLOCK_SIZE_K is always 128) against its float32 reference, and writes the ``dtype=fp8_w8a8`` table.
``--space quick`` searches a trimmed space (two tile widths, two pipeline depths: minutes, for a short GPU
lease); the table is rewritten after every batch size, so a run cut short still leaves the sizes it finished.

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
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout, installed or not

DEFAULT_BATCH_SIZES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096]


def candidate_configs(
    m: int, num_experts: int, top_k: int, *, quick: bool = False, block_k: int | None = None
) -> list[dict[str, int]]:
    """The search space for m tokens; tile heights beyond the tokens per expert are pruned. ``quick``: a trimmed
    space (tile widths 64/128, 3-4 stages, one GROUP_SIZE_M); ``block_k``: a fixed BLOCK_SIZE_K (block FP8)."""
    tokens_per_expert = max(1, m * top_k // num_experts)
    block_ms = [bm for bm in (16, 32, 64, 128) if bm <= max(16, 2 * tokens_per_expert)]
    block_ns = (64, 128) if quick else (32, 64, 128, 256)
    block_ks = (block_k,) if block_k else (64, 128) if quick else (64, 128, 256)
    # quick: grouped tile order only where it matters (many M tiles); one value, so decode sizes share compiles
    groups = ((1,) if tokens_per_expert < 64 else (16,)) if quick else (1, 16)
    stage_counts = (3, 4) if quick else (2, 3, 4, 5)
    configs = []
    for bm, bn, bk, group, warps, stages in itertools.product(
        block_ms, block_ns, block_ks, groups, (4, 8), stage_counts
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


def smoke_configs(block_k: int | None = None) -> list[dict[str, int]]:
    """Two small configs for --cpu-smoke (``block_k``: the FP8 weight block, BLOCK_SIZE_K's only value)."""
    return [
        {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": block_k or 16, "GROUP_SIZE_M": 1},
        {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": block_k or 32, "GROUP_SIZE_M": 2},
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


class Fp8Layer:
    """One block-FP8 MoE layer (weights quantized once, as a checkpoint stores them; bf16 activations, or float32
    under --cpu-smoke) with the MoE's call signature: run(x, config) and reference(x)."""

    def __init__(
        self, hidden: int, inter: int, num_experts: int, block: tuple[int, int], act_dtype: torch.dtype, device: str
    ):
        from qwen3_api.kernels import fp8_blocks

        _, w13, w2, _, _ = make_inputs(1, hidden, inter, num_experts, 1, torch.float32, device)
        self.experts = fp8_blocks.quantize_experts(w13, w2, block)
        self.block, self.act_dtype, self.device = block, act_dtype, device
        self.hidden, self.num_experts = hidden, num_experts

    def inputs(self, m: int, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, _, _, weights, ids = make_inputs(m, self.hidden, 1, self.num_experts, top_k, self.act_dtype, self.device)
        return x, weights, ids

    def run(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, config: dict[str, int] | None = None
            ) -> torch.Tensor:  # fmt: skip
        from qwen3_api.kernels.triton_fp8_moe import fused_moe_fp8

        q13, q2, s13, s2 = self.experts
        return fused_moe_fp8(x, q13, q2, s13, s2, self.block, weights, ids, config=config)

    def reference(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        from qwen3_api.kernels import fp8_blocks

        q13, q2, s13, s2 = self.experts
        return fp8_blocks.w8a8_moe_reference(x, q13, q2, s13, s2, self.block, weights, ids)


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
    dtype: torch.dtype | str,
    device: str,
    smoke: bool,
    quick: bool = False,
    fp8_block: tuple[int, int] = (128, 128),
    on_result: Callable[[dict[str, dict[str, int]], dict[str, float]], None] | None = None,
) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """{batch size: best config} and {batch size: its microseconds per layer}; ``dtype`` "fp8": the block-FP8
    MoE (bf16 activations; float32 under --cpu-smoke). ``on_result`` sees the tables after each batch size."""
    # after main() has set TRITON_INTERPRET for --cpu-smoke: triton reads it when first imported
    from qwen3_api.kernels import torch_moe
    from qwen3_api.kernels.triton_moe import fused_moe

    fp8 = dtype == "fp8"
    act_dtype = torch.float32 if smoke else torch.bfloat16
    layer = Fp8Layer(hidden, inter, num_experts, fp8_block, act_dtype, device) if fp8 else None
    best: dict[str, dict[str, int]] = {}
    timings: dict[str, float] = {}
    for m in batch_sizes:
        if layer is not None:
            x, weights, ids = layer.inputs(m, top_k)

            def call(config: dict[str, int] | None, x=x, weights=weights, ids=ids) -> torch.Tensor:  # noqa: ANN001
                return layer.run(x, weights, ids, config)

            def reference(x=x, weights=weights, ids=ids) -> torch.Tensor:  # noqa: ANN001
                return layer.reference(x, weights, ids)
        else:
            inputs = make_inputs(m, hidden, inter, num_experts, top_k, dtype, device)  # type: ignore[arg-type]

            def call(config: dict[str, int] | None, inputs=inputs) -> torch.Tensor:  # noqa: ANN001
                return fused_moe(*inputs, config=config)

            def reference(inputs=inputs) -> torch.Tensor:  # noqa: ANN001
                return torch_moe.fused_moe(*inputs)
        results = []
        if smoke:
            configs = smoke_configs(fp8_block[1] if fp8 else None)
        else:
            configs = candidate_configs(m, num_experts, top_k, quick=quick, block_k=fp8_block[1] if fp8 else None)
        for config in configs:
            try:
                us = time_config(lambda config=config: call(config), smoke)
            except Exception as exc:  # noqa: BLE001 (a config the compiler rejects, e.g. out of shared memory)
                print(f"  m={m} skip {config}: {type(exc).__name__}", file=sys.stderr)
                continue
            results.append((us, config))
        if not results:
            raise RuntimeError(f"no candidate config ran for batch size {m}")
        us, config = min(results, key=lambda r: r[0])
        got = call(config).float()
        ref = reference().float()
        err = ((got - ref).norm() / ref.norm().clamp_min(1e-12)).item()
        if err > (1e-4 if act_dtype == torch.float32 and not fp8 else 3e-2):
            raise RuntimeError(f"best config for m={m} gives relative error {err:.3g}: {config}")
        best[str(m)], timings[str(m)] = config, round(us, 2)
        print(f"m={m:5d}  {us:9.1f} us  rel.err {err:.1e}  {config}", flush=True)
        if on_result is not None:
            on_result(best, timings)
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
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32", "fp8"], default="bf16",
                        help="fp8: block-FP8 (W8A8) experts with 128x128 weight blocks")  # fmt: skip
    parser.add_argument("--space", choices=["full", "quick"], default="full",
                        help="quick: a trimmed search space (minutes on an H200, not tens of minutes)")  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=DEFAULT_BATCH_SIZES)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: the package's moe_configs/")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny shapes on CPU via the Triton interpreter"
    )
    args = parser.parse_args(argv)

    fp8_block = (128, 128)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        args.num_experts, args.intermediate, args.hidden, args.top_k = 4, 32, 32, 2
        args.dtype = "fp32" if args.dtype == "bf16" else args.dtype
        fp8_block = (16, 16)
        if args.batch_sizes == DEFAULT_BATCH_SIZES:
            args.batch_sizes = [1, 4]
        device, device_name = "cpu", "cpu"
    elif not torch.cuda.is_available():
        print("tune_moe needs a CUDA GPU (or --cpu-smoke for a functional check on CPU)", file=sys.stderr)
        return 2
    else:
        device, device_name = "cuda", torch.cuda.get_device_name().replace(" ", "_")

    from qwen3_api.kernels.moe_config_table import CONFIG_DIR, config_file_name

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
             "fp8": torch.float8_e4m3fn}[args.dtype]  # fmt: skip
    out_dir = args.out_dir or CONFIG_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / config_file_name(args.num_experts, args.intermediate, dtype, device_name)
    shape = {
        "num_experts": args.num_experts,
        "intermediate_size": args.intermediate,
        "hidden_size": args.hidden,
        "top_k": args.top_k,
        "dtype": args.dtype,
    }
    if args.dtype == "fp8":
        shape["weight_block_size"] = list(fp8_block)

    def write(best: dict[str, dict[str, int]], timings: dict[str, float]) -> None:
        doc = {
            "comment": f"Tuned by benchmarks/tune_moe.py on {device_name} (torch {torch.__version__}, "
            f"{args.space} space); timings are one MoE layer in microseconds.",
            "tuned_here": not args.cpu_smoke,
            "shape": shape,
            "configs": best,
            "timings_us": timings,
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")

    tune(
        args.batch_sizes,
        hidden=args.hidden,
        inter=args.intermediate,
        num_experts=args.num_experts,
        top_k=args.top_k,
        dtype="fp8" if args.dtype == "fp8" else dtype,
        device=device,
        smoke=args.cpu_smoke,
        quick=args.space == "quick",
        fp8_block=fp8_block,
        on_result=write,  # after every batch size: a run cut short keeps what it finished
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decode and prefill speed at the real Qwen3-30B-A3B shape on one GPU, beside the bandwidth floor.

Random bf16 weights are made on the GPU (no checkpoint). In the same run it measures the device's copy
bandwidth (and bf16 matmul rate), then:

* single-stream decode tok/s and decode throughput at batch 8/32/64/128 (each sequence with --context tokens
  of history), through the Triton kernels and CUDA graphs, greedy next token fed back on the device;
* prefill tok/s and the time to first token for each --prompt-len prompt (one sequence);
* each beside its floor: the bytes a step must read (weights touched + KV history) over the measured copy
  bandwidth (and, for prefill, the FLOPs over the measured matmul rate);
* transformers' Qwen3MoeForCausalLM on the same GPU and shapes, where it fits in --hf-budget-s.

    python benchmarks/gpu_decode.py                     # on an H200: prints a markdown table
    python benchmarks/gpu_decode.py --json-out r.json   # also machine-readable
    python benchmarks/gpu_decode.py --cpu-smoke         # tiny shapes on CPU with the torch kernels (CI)
    python benchmarks/gpu_decode.py --quant fp8 --kv-cache-dtype fp8   # block-FP8 weights (W8A8), FP8 KV cache

Targets (issue 6): single stream >= 400 tok/s, batch 64 >= 3,000 tok/s; issue 16: FP8 >= 1.2x bf16 at batch 1.
``--quant fp8`` makes random FP8 weights with 128x128 block scales (as Qwen3-30B-A3B-FP8 stores them; lm_head
and routers bf16) and runs the Triton W8A8 kernels (--cpu-smoke: through the interpreter, 16x16 blocks).
Without CUDA and without --cpu-smoke it exits with code 2.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from gpu_floors import (
    Timer,
    copy_bandwidth,
    decode_floor_s,
    matmul_rate,
    prefill_floor_s,
)
from gpu_models import BLOCK_SIZE, QWEN3_30B_A3B, TINY, fp8_config, random_kv_caches, random_model  # noqa: F401

from qwen3_api.engine.cuda_graphs import CudaGraphDecodeRunner
from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM


@dataclass
class Row:
    """One line of the result table."""

    name: str
    tok_s: float
    floor_tok_s: float
    hf_tok_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def decode_metadata(batch: int, context: int, steps: int, device: torch.device) -> list[AttentionMetadata]:
    """Per-step metadata for `batch` sequences that own fixed block ranges, starting at `context` tokens."""
    per_seq = -(-(context + steps) // BLOCK_SIZE)
    out = []
    for step in range(steps):
        length = context + step + 1
        tables = [list(range(b * per_seq, b * per_seq + -(-length // BLOCK_SIZE))) for b in range(batch)]
        out.append(AttentionMetadata.build([1] * batch, [length] * batch, tables, BLOCK_SIZE, device))
    return out


def bench_decode(
    net: Qwen3ForCausalLM,
    batch: int,
    context: int,
    steps: int,
    timer: Timer,
    use_graphs: bool,
    kv_dtype: torch.dtype | None = None,
) -> float:
    """Decode tok/s: `steps` greedy steps of `batch` sequences, the argmax fed back on the device."""
    config, device = net.config, net.device
    per_seq = -(-(context + steps) // BLOCK_SIZE)
    # a random history stands in for the prompt
    caches = random_kv_caches(config, batch * per_seq, device, kv_dtype or net.dtype)
    metas = decode_metadata(batch, context, steps, device)
    forward: Callable[[torch.Tensor, torch.Tensor, AttentionMetadata], torch.Tensor]
    if use_graphs:
        runner = CudaGraphDecodeRunner(
            net, caches, max_batch_size=batch, max_blocks_per_seq=per_seq, buckets=[batch]
        )
        runner.capture()
        forward = runner.run
    else:

        def forward(ids: torch.Tensor, pos: torch.Tensor, attn: AttentionMetadata) -> torch.Tensor:
            return net(ids, pos, attn, caches)

    ids = torch.zeros(batch, dtype=torch.long, device=device)

    def run(n: int) -> None:
        nonlocal ids
        for step in range(n):
            pos = torch.full((batch,), context + step, dtype=torch.long, device=device)
            ids = net.compute_logits(forward(ids, pos, metas[step])).argmax(-1)

    run(min(2, steps))  # warm-up: Triton compilation, allocator
    timer.sync()
    elapsed = timer(lambda: run(steps))
    return batch * steps / elapsed


def bench_prefill(
    net: Qwen3ForCausalLM, tokens: int, timer: Timer, kv_dtype: torch.dtype | None = None
) -> float:
    """Prefill tok/s of one prompt of `tokens` tokens (forward + logits of the last token); tokens / this is
    the time to first token."""
    device = net.device
    caches = allocate_kv_cache(
        net.config, -(-tokens // BLOCK_SIZE), BLOCK_SIZE, device, kv_dtype or net.dtype
    )
    attn = AttentionMetadata.build(
        [tokens], [tokens], [list(range(-(-tokens // BLOCK_SIZE)))], BLOCK_SIZE, device
    )
    ids = torch.randint(0, net.config.vocab_size, (tokens,), device=device)
    pos = torch.arange(tokens, device=device)

    def run() -> None:
        net.compute_logits(net(ids, pos, attn, caches)[-1:])

    run()
    timer.sync()
    return tokens / min(timer(run) for _ in range(3 if tokens <= 8192 else 1))  # long prompts: seconds each


def hf_speeds(
    cfg: dict[str, Any], device: torch.device, dtype: torch.dtype, args: argparse.Namespace, timer: Timer
) -> dict[str, Any]:
    """transformers' decode tok/s per batch (key 'decode@B') and prefill tok/s, within the time budget."""
    from transformers import DynamicCache, Qwen3MoeConfig, Qwen3MoeForCausalLM

    kwargs = {k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")}
    hf_config = Qwen3MoeConfig(**kwargs)
    # Made directly in the model dtype: a float32 30B model would not fit beside the bf16 copy.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3MoeForCausalLM(hf_config).eval()
    finally:
        torch.set_default_dtype(default)
    out: dict[str, Any] = {
        "experts_implementation": str(getattr(model.config, "_experts_implementation", None))
    }
    # transformers 5.x renames past_key_values to cache; use whichever this version takes.
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    # Only the last position's logits, as ours: a [128, 512, 151936] logits tensor alone would be 20 GB.
    last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    deadline = time.monotonic() + args.hf_budget_s
    with torch.no_grad():
        prompt_len = min(
            args.prompt_len
        )  # eager attention materialises [heads, L, L]: the shortest prompt only
        prompt = torch.randint(0, cfg["vocab_size"], (1, prompt_len), device=device)
        model(prompt, **last)
        timer.sync()
        out[f"prefill@{prompt_len}"] = prompt_len / timer(lambda: model(prompt, **last))
        for batch in args.batch_sizes:
            if time.monotonic() > deadline:
                break
            try:
                ctx = torch.randint(0, cfg["vocab_size"], (batch, args.context), device=device)
                cache = DynamicCache(config=hf_config)
                logits = model(ctx, **{cache_kw: cache}, use_cache=True, **last).logits[:, -1]
                steps = args.hf_steps

                def run(
                    logits: torch.Tensor = logits, cache: DynamicCache = cache, steps: int = steps
                ) -> None:
                    for _ in range(steps):
                        nxt = logits.argmax(-1, keepdim=True)
                        logits = model(nxt, **{cache_kw: cache}, use_cache=True).logits[:, -1]

                out[f"decode@{batch}"] = batch * steps / timer(run)
            except torch.OutOfMemoryError:
                out[f"decode@{batch}"] = float("nan")
            finally:
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return out


def run(args: argparse.Namespace) -> list[Row]:
    """Measure everything the table shows; returns its rows."""
    cfg = TINY if args.cpu_smoke else QWEN3_30B_A3B
    fp8 = args.quant == "fp8"
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    config = ModelConfig.from_dict(fp8_config(cfg, 16 if args.cpu_smoke else 128) if fp8 else cfg)
    dtype = config.torch_dtype
    elem = 1 if fp8 else torch.empty((), dtype=dtype).element_size()
    kv_dtype = torch.float8_e4m3fn if args.kv_cache_dtype == "fp8" else dtype
    kv_elem = torch.empty((), dtype=kv_dtype).element_size()
    timer = Timer(device)
    bandwidth = copy_bandwidth(device, timer, 64 << 20 if args.cpu_smoke else 4 << 30)
    flops = matmul_rate(device, dtype, timer, 256 if args.cpu_smoke else 8192)
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s, {dtype} matmul {flops / 1e12:.1f} TFLOP/s", flush=True)

    # the CPU smoke of --quant fp8 runs the Triton set in the interpreter (the torch set dequantizes FP8)
    kernels = None
    if fp8 and args.cpu_smoke:
        from qwen3_api.kernels import triton_kernels

        kernels = triton_kernels()
    net = random_model(config, device, dtype, kernels)
    if fp8:
        assert net.fp8 is not None and net.fp8.keep_fp8, (
            "FP8 weights were not kept: no FP8 GEMMs on this device"
        )
    use_graphs = device.type == "cuda" and not args.no_cuda_graphs
    rows = []
    for batch in args.batch_sizes:
        tok_s = bench_decode(net, batch, args.context, args.steps, timer, use_graphs, kv_dtype)
        floor = batch / decode_floor_s(config, batch, args.context, elem, bandwidth, kv_elem=kv_elem,
                                       fp8_weights=fp8)  # fmt: skip
        name = "decode, single stream" if batch == 1 else f"decode, batch {batch}"
        rows.append(Row(name, tok_s, floor, extra={"batch": batch}))
        print(f"{name}: {tok_s:.0f} tok/s (floor {floor:.0f})", flush=True)
        gc.collect()  # this batch's KV cache and graphs go before the next batch allocates its own
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for tokens in args.prompt_len:
        prefill = bench_prefill(net, tokens, timer, kv_dtype)
        # the floor of prefill counts bf16 matmul rates: FP8 is compared against the same floor
        floor = tokens / prefill_floor_s(config, tokens, 2, bandwidth, flops)
        ttft_ms = 1e3 * tokens / prefill
        rows.append(Row(f"prefill, {tokens}-token prompt", prefill, floor,
                        extra={"batch": 0, "prompt_tokens": tokens, "ttft_ms": round(ttft_ms, 1)}))  # fmt: skip
        print(
            f"prefill {tokens}: {prefill:.0f} tok/s, TTFT {ttft_ms:.0f} ms (floor {floor:.0f} tok/s)",
            flush=True,
        )
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del net
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if not args.no_transformers and not fp8:  # transformers runs the bf16 model only
        try:
            hf = hf_speeds(cfg, device, dtype, args, timer)
        except (torch.OutOfMemoryError, ImportError) as exc:
            print(f"transformers comparison skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
            hf = {}
        for row in rows:
            key = (
                f"decode@{row.extra['batch']}"
                if row.extra["batch"]
                else f"prefill@{row.extra['prompt_tokens']}"
            )
            value = hf.get(key)
            row.hf_tok_s = value if isinstance(value, float) else None
        if hf:
            print(f"transformers experts implementation: {hf.get('experts_implementation')}")
    for row in rows:
        row.extra |= {
            "bandwidth_GBps": round(bandwidth / 1e9, 1),
            "matmul_TFLOPs": round(flops / 1e12, 1),
            "quant": args.quant,
            "kv_cache_dtype": args.kv_cache_dtype,
            "cuda_graphs": use_graphs,
        }
    return rows


def table(rows: list[Row], args: argparse.Namespace) -> str:
    """The markdown table benchmarks/RESULTS.md records."""
    targets = {} if args.cpu_smoke else {1: 400.0, 64: 3000.0}
    lines = [
        f"context {args.context} tokens per sequence, {args.steps} decode steps, "
        + (
            "CPU smoke run: tiny shapes, torch kernels, the numbers mean nothing"
            if args.cpu_smoke
            else "eager decode"
            if args.no_cuda_graphs
            else "CUDA-graph decode"
        )
        + f", weights {'block-FP8 (W8A8)' if args.quant == 'fp8' else 'bf16'}, KV cache {args.kv_cache_dtype}",
        "",
        "| workload | ours tok/s | floor tok/s | ours / floor | TTFT ms | transformers tok/s | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = targets.get(r.extra["batch"])
        mark = "" if target is None else f">= {target:.0f}: {'met' if r.tok_s >= target else 'NOT met'}"
        hf = "n/a" if r.hf_tok_s is None or math.isnan(r.hf_tok_s) else f"{r.hf_tok_s:.0f}"
        ttft = f"{r.extra['ttft_ms']:.0f}" if "ttft_ms" in r.extra else ""
        lines.append(
            f"| {r.name} | {r.tok_s:.0f} | {r.floor_tok_s:.0f} | {r.tok_s / r.floor_tok_s:.0%} | {ttft} | {hf} | {mark} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 2 when no CUDA device and no --cpu-smoke."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--context", type=int, default=512, help="history tokens per sequence during decode")
    parser.add_argument("--steps", type=int, default=64, help="decode steps timed per batch size")
    parser.add_argument(
        "--prompt-len",
        type=int,
        nargs="+",
        default=[2048],
        help="prompt lengths whose prefill speed and time to first token are measured",
    )
    parser.add_argument(
        "--quant",
        choices=["none", "fp8"],
        default="none",
        help="fp8: random block-FP8 weights through the W8A8 kernels (Qwen3-30B-A3B-FP8's format)",
    )
    parser.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    parser.add_argument(
        "--no-cuda-graphs", action="store_true", help="eager decode (to measure the graphs' gain)"
    )
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--hf-steps", type=int, default=16, help="decode steps timed for transformers")
    parser.add_argument(
        "--hf-budget-s", type=float, default=240.0, help="stop starting transformers runs after"
    )
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU with the torch kernels")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.batch_sizes = [b for b in args.batch_sizes if b <= 8] or [1]
        args.context, args.steps, args.prompt_len, args.hf_steps = 20, min(args.steps, 4), [32], 2
        if args.quant == "fp8":
            os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: the FP8 kernels run on the CPU
    elif not torch.cuda.is_available():
        print(
            "gpu_decode.py needs a CUDA GPU (use --cpu-smoke to exercise the code path on CPU)",
            file=sys.stderr,
        )
        return 2
    rows = run(args)
    print(table(rows, args))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump([r.__dict__ for r in rows], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

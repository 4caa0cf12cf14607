"""Correctness of the FP8 path (issue 16) on a real GPU: compiled block-FP8 GEMMs, the FP8 KV cache, and an FP8
checkpoint through the engine. gpu_check.py does the same for the bf16 / float32 kernels.

1. fp8_linear at the attention shapes of Qwen3-30B-A3B (qkv 5120x2048, o 2048x4096) and fused_moe_fp8 at the
   expert shape (E=128, H=2048, I=768, top-8), bf16 activations, against the float32 W8A8 references of
   kernels/fp8_blocks.py (the same per-token-group activation quantization; FP8 tensor cores accumulate with
   fewer bits, hence the 1e-2 limit) and, looser, against the dequantized weights;
2. paged attention over an FP8 cache with per-tensor scales (decode and chunked prefill) against the torch
   kernels over the dequantized cache;
3. a tiny checkpoint in the official FP8 format through the engine (Triton W8A8 + FP8 KV cache + CUDA graphs):
   its greedy tokens' logprobs against the CPU's dequantized float32 model.

    python benchmarks/gpu_check_fp8.py             # on the GPU (compute capability >= 8.9); exit 1 on a mismatch
    python benchmarks/gpu_check_fp8.py --cpu-smoke # tiny shapes on the CPU (interpreter), exercises the code only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    """Record and print one check."""
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((got.double() - ref).norm() / ref.norm().clamp_min(1e-30))


def check_gemms(device: str, small: bool) -> None:
    from qwen3_api.kernels import fp8_blocks as fb
    from qwen3_api.kernels import torch_moe
    from qwen3_api.kernels.triton_fp8_linear import fp8_linear
    from qwen3_api.kernels.triton_fp8_moe import fused_moe_fp8

    block = (32, 32) if small else (128, 128)
    gen = torch.Generator(device=device).manual_seed(0)
    shapes = [(96, 64), (64, 96)] if small else [(5120, 2048), (2048, 4096)]
    for n, k in shapes:
        weight, scale = fb.quantize(torch.randn(n, k, device=device, generator=gen) / k**0.5, block)
        for m in (1, 3) if small else (1, 64, 2048):
            x = torch.randn(m, k, device=device, generator=gen).to(torch.bfloat16)
            got = fp8_linear(x, weight, scale, block)
            err = rel_err(got, fb.w8a8_linear_reference(x, weight, scale, block))
            plain = rel_err(got, x.float() @ fb.dequantize(weight, scale, block).T)
            check(f"fp8_linear {n}x{k} M={m}", err < 1e-2 and plain < 6e-2,
                  f"vs W8A8 reference {err:.2e} (limit 1e-2), vs dequantized {plain:.2e} (limit 6e-2)")  # fmt: skip
    e, h, i, top_k = (8, 64, 48, 2) if small else (128, 2048, 768, 8)
    w13 = torch.randn(e, 2 * i, h, device=device, generator=gen) / h**0.5
    w2 = torch.randn(e, h, i, device=device, generator=gen) / i**0.5
    q13, q2, s13, s2 = fb.quantize_experts(w13, w2, block)
    for t in (1, 5) if small else (1, 64, 2048):
        x = torch.randn(t, h, device=device, generator=gen).to(torch.bfloat16)
        weights, ids = torch.topk(torch.randn(t, e, device=device, generator=gen).softmax(-1), top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        got = fused_moe_fp8(x, q13, q2, s13, s2, block, weights, ids)
        err = rel_err(got, fb.w8a8_moe_reference(x, q13, q2, s13, s2, block, weights, ids))
        d13, d2 = fb.dequantize_w13(q13, s13, block), fb.dequantize(q2, s2, block)
        plain = rel_err(got, torch_moe.fused_moe(x.float(), d13, d2, weights, ids))
        check(f"fused_moe_fp8 T={t}", err < 3e-2 and plain < 0.1,
              f"vs W8A8 reference {err:.2e} (limit 3e-2), vs dequantized {plain:.2e} (limit 0.1)")  # fmt: skip


def check_kv_cache(device: str, small: bool) -> None:
    from qwen3_api.kernels import torch_attention, triton_attention
    from qwen3_api.kernels.metadata import AttentionMetadata

    hq, hkv, d, bs = (4, 2, 16, 16) if small else (32, 4, 128, 16)
    cases = {
        "decode": ([1, 1, 1], [3, 40, 70]) if small else ([1] * 8, [1, 17, 300, 511, 1024, 2000, 64, 129]),
        "chunked prefill": ([7, 1, 12], [30, 9, 12]) if small else ([300, 1, 64], [1500, 700, 64]),
    }
    k_scale, v_scale = torch.tensor([0.3], device=device), torch.tensor([0.02], device=device)
    for name, (query_lens, context_lens) in cases.items():
        gen = torch.Generator(device=device).manual_seed(1)
        blocks = sum(-(-c // bs) for c in context_lens) + 4
        k = torch.randn(blocks * bs, hkv, d, device=device, generator=gen)
        v = torch.randn(blocks * bs, hkv, d, device=device, generator=gen) * 0.05
        shape = (blocks, bs, hkv, d)
        k_cache = torch.empty(shape, device=device, dtype=torch.float8_e4m3fn)
        v_cache = torch.empty_like(k_cache)
        slots = torch.randperm(blocks * bs, device=device, generator=gen)
        triton_attention.store_kvcache(k, v, k_cache, v_cache, slots, k_scale=k_scale, v_scale=v_scale)
        tables, used = [], 0
        for c in context_lens:
            tables.append(list(range(used, used + -(-c // bs))))
            used += -(-c // bs)
        attn = AttentionMetadata.build(query_lens, context_lens, tables, bs, device)
        q = torch.randn(sum(query_lens), hq, d, device=device, generator=gen).to(torch.bfloat16)
        got = triton_attention.paged_attention(
            q, k_cache, v_cache, attn, d**-0.5, k_scale=k_scale, v_scale=v_scale
        )
        ref = torch_attention.paged_attention(
            q.float(), k_cache.float() * k_scale, v_cache.float() * v_scale, attn, d**-0.5
        )
        err = rel_err(got, ref)
        check(f"paged_attention fp8 cache {name}", err < 2e-2, f"relative error {err:.2e} (limit 2e-2)")


def check_engine(device: str) -> None:
    """Greedy tokens of a tiny FP8 checkpoint on the GPU (FP8 weights and KV cache, CUDA graphs) vs the CPU."""
    from gpu_check import greedy

    from qwen3_api.demo.tiny_fp8 import make_tiny_fp8_model
    from qwen3_api.model.loader import load_model

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_fp8_model(Path(tmp) / "fp8", layers=2)
        cpu, config = load_model(path, dtype=torch.float32, device="cpu", progress=False)
        gpu, _ = load_model(path, dtype=torch.bfloat16, device=device, progress=False)
    kept = gpu.fp8 is not None and gpu.fp8.keep_fp8
    check("FP8 weights kept on the device", kept or device == "cpu", f"keep_fp8={kept}")
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, config.vocab_size, (n,), generator=gen).tolist() for n in (5, 17, 40)]
    expected = greedy(cpu, prompts, 8)
    got = greedy(gpu, prompts, 8, kv_cache_dtype="fp8")
    worst, compared = 0.0, 0
    for r, (tokens, logprobs) in expected.items():
        for tok, tok8, lp, lp8 in zip(tokens, got[r][0], logprobs, got[r][1], strict=True):
            if tok != tok8:
                break  # a near tie flipped: the continuations differ from here on
            worst, compared = max(worst, abs(lp[tok] - lp8[tok])), compared + 1
    check("engine FP8 (W8A8, FP8 KV, bf16) logprobs vs CPU float32", compared > 0 and worst < 0.3,
          f"max |delta logprob| {worst:.3f} over {compared} tokens (limit 0.3)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when every check passes, 1 on a mismatch, 2 without an FP8-capable GPU and --cpu-smoke."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny shapes on CPU via the Triton interpreter"
    )
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        device = "cpu"
    elif not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        print("gpu_check_fp8.py needs a GPU with FP8 tensor cores (compute capability >= 8.9), or --cpu-smoke",
              file=sys.stderr)  # fmt: skip
        return 2
    else:
        device = "cuda"
    FAILURES.clear()
    check_gemms(device, small=args.cpu_smoke)
    check_kv_cache(device, small=args.cpu_smoke)
    check_engine(device)
    print("all FP8 checks passed" if not FAILURES else f"{len(FAILURES)} FP8 check(s) failed: {FAILURES}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

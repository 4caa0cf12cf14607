"""Correctness of the GPU path on a real GPU: compiled Triton kernels and the engine with CUDA graphs.

The unit tests run the kernels under TRITON_INTERPRET=1 on CPU; this script runs them compiled, at the
Qwen3-30B-A3B shapes, against the torch kernels on the same GPU, then checks the engine end to end:

1. fused_moe (E=128, H=2048, I=768, top-8) for several batch sizes, float32 and bf16; rms_norm and rotary;
2. paged attention (32 q / 4 kv heads, head_dim 128): decode with long scattered histories, chunked prefill
   over a cached prefix, float32 and bf16;
3. the engine's greedy tokens on a tiny random model: GPU float32 (Triton + CUDA graphs) == CPU float32, token
   for token; GPU bf16 chosen-token logprobs within bf16 tolerance of CPU float32.

    python benchmarks/gpu_check.py             # on the GPU; exit code 1 on any mismatch
    python benchmarks/gpu_check.py --cpu-smoke # tiny shapes on CPU (interpreter), exercises the code only

Tolerances: float32 relative error 1e-4 (TF32 is off for float32 in our kernels); bf16 relative error 2e-2
(inputs rounded to 8 mantissa bits, float32 accumulation, bf16 intermediates rounded once per GEMM).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from qwen3_api.model.qwen3 import Qwen3ForCausalLM

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    """Record and print one check."""
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((got.double() - ref).norm() / ref.norm().clamp_min(1e-30))


def check_moe(device: str, small: bool) -> None:
    from qwen3_api.kernels import torch_moe, triton_moe

    e, h, i, k = (8, 64, 32, 2) if small else (128, 2048, 768, 8)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        gen = torch.Generator(device=device).manual_seed(0)
        w13 = (torch.randn(e, 2 * i, h, device=device, generator=gen) / h**0.5).to(dtype)
        w2 = (torch.randn(e, h, i, device=device, generator=gen) / i**0.5).to(dtype)
        for t in (1, 5) if small else (1, 8, 64, 257, 2048):
            x = torch.randn(t, h, device=device, generator=gen).to(dtype)
            weights, ids = torch.topk(torch.randn(t, e, device=device, generator=gen).softmax(-1), k, dim=-1)
            weights = weights / weights.sum(-1, keepdim=True)
            err = rel_err(
                triton_moe.fused_moe(x, w13, w2, weights, ids), torch_moe.fused_moe(x, w13, w2, weights, ids)
            )
            check(f"fused_moe {dtype} T={t}", err < tol, f"relative error {err:.2e} (limit {tol:g})")


def check_attention(device: str, small: bool) -> None:
    from qwen3_api.kernels import torch_attention, triton_attention
    from qwen3_api.kernels.metadata import AttentionMetadata

    hq, hkv, d, bs = (4, 2, 16, 16) if small else (32, 4, 128, 16)
    cases = {
        "decode": ([1, 1, 1], [3, 40, 70]) if small else ([1] * 8, [1, 17, 300, 511, 1024, 2000, 64, 129]),
        "chunked prefill": ([7, 1, 12], [30, 9, 12]) if small else ([300, 1, 64], [1500, 700, 64]),
    }
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        for name, (query_lens, context_lens) in cases.items():
            gen = torch.Generator(device=device).manual_seed(1)
            needs = [-(-c // bs) for c in context_lens]
            perm = torch.randperm(sum(needs) + 4, device=device, generator=gen).tolist()
            tables, used = [], 0
            for n in needs:
                tables.append(perm[used : used + n])
                used += n
            shape = (sum(needs) + 4, bs, hkv, d)
            k_cache = torch.randn(shape, device=device, generator=gen).to(dtype)
            v_cache = torch.randn(shape, device=device, generator=gen).to(dtype)
            attn = AttentionMetadata.build(query_lens, context_lens, tables, bs, device)
            q = torch.randn(sum(query_lens), hq, d, device=device, generator=gen).to(dtype)
            got = triton_attention.paged_attention(q, k_cache, v_cache, attn, d**-0.5)
            err = rel_err(got, torch_attention.paged_attention(q, k_cache, v_cache, attn, d**-0.5))
            check(f"paged_attention {name} {dtype}", err < tol, f"relative error {err:.2e} (limit {tol:g})")


def check_elementwise(device: str, small: bool) -> None:
    from qwen3_api.kernels import torch_pointwise, triton_norm, triton_rotary

    t, heads, d = (5, 4, 16) if small else (300, 32, 128)
    gen = torch.Generator(device=device).manual_seed(2)
    for dtype in (torch.float32, torch.bfloat16):
        # compiled, both round to nearest even in the same order: within one ulp of the dtype; the
        # interpreter (--cpu-smoke) does not round to nearest even, hence the looser smoke limit
        tol = 1e-5 if dtype == torch.float32 else 2**-5 if small else 2**-7
        x = (torch.randn(t, heads, d, device=device, generator=gen) * 3).to(dtype)
        w = (1 + 0.1 * torch.randn(d, device=device, generator=gen)).to(dtype)
        err = rel_err(triton_norm.rms_norm(x, w, 1e-6), torch_pointwise.rms_norm(x, w, 1e-6))
        check(f"rms_norm {dtype}", err < tol, f"relative error {err:.2e} (limit {tol:g})")
        angle = torch.arange(t, device=device)[:, None] * torch.rand(d // 2, device=device, generator=gen)
        emb = torch.cat((angle, angle), dim=-1)
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        err = rel_err(triton_rotary.rotary(x, cos, sin), torch_pointwise.rotary(x, cos, sin))
        check(f"rotary {dtype}", err < tol, f"relative error {err:.2e} (limit {tol:g})")


def greedy(
    net: torch.nn.Module, prompts: list[list[int]], max_tokens: int, kv_cache_dtype: str = "auto"
) -> dict[str, tuple[list[int], list]]:
    """Greedy tokens and chosen-token logprobs of each prompt, through the engine (graphs on CUDA)."""
    from qwen3_api.engine.args import EngineArgs
    from qwen3_api.engine.llm_engine import LLMEngine
    from qwen3_api.engine.sampling_params import SamplingParams

    args = EngineArgs(
        device=str(net.device),
        max_num_seqs=8,
        max_model_len=256,
        block_size=16,
        kv_cache_dtype=kv_cache_dtype,
    )
    engine = LLMEngine(net, net.config, args, num_blocks=64)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=0)
    for n, prompt in enumerate(prompts):
        engine.add_request(str(n), prompt, params)
    out: dict[str, tuple[list[int], list]] = {}
    while engine.has_unfinished_requests():
        for result in engine.step().outputs:
            if result.finished:
                sample = result.outputs[0]
                out[result.request_id] = (sample.token_ids, sample.logprobs or [])
    return out


def clone(net: Qwen3ForCausalLM, device: str, dtype: torch.dtype) -> Qwen3ForCausalLM:
    """The same weights in a model built on device in dtype (its rotary tables made there in float32)."""
    copy = Qwen3ForCausalLM(net.config, device=device, dtype=dtype)
    copy.load_state_dict(net.state_dict())
    return copy.eval()


def check_engine(device: str, reference_net: Qwen3ForCausalLM) -> None:
    gen = torch.Generator().manual_seed(5)
    prompts = [
        torch.randint(0, reference_net.config.vocab_size, (n,), generator=gen).tolist() for n in (5, 17, 40)
    ]
    expected = greedy(reference_net, prompts, 12)
    gpu32 = greedy(clone(reference_net, device, torch.float32), prompts, 12)
    same = all(gpu32[r][0] == expected[r][0] for r in expected)
    check("engine greedy float32 == CPU float32", same, f"{len(expected)} prompts x 12 tokens")
    gpu16 = greedy(clone(reference_net, device, torch.bfloat16), prompts, 12)
    worst = 0.0
    for r, (tokens, logprobs) in expected.items():
        for tok, tok16, lp, lp16 in zip(tokens, gpu16[r][0], logprobs, gpu16[r][1], strict=True):
            if tok != tok16:
                break  # a near tie flipped in bf16: the continuations differ from here on
            worst = max(worst, abs(lp[tok] - lp16[tok]))
    # bf16 keeps 8 mantissa bits: a logprob of magnitude ~5 moves by ~0.02-0.1 after two layers and the lm_head
    check(
        "engine greedy bf16 logprobs vs CPU float32",
        worst < 0.15,
        f"max |delta logprob| {worst:.3f} (limit 0.15)",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when every check passes, 1 on a mismatch, 2 without CUDA and without --cpu-smoke."""
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
    elif not torch.cuda.is_available():
        print("gpu_check.py needs a CUDA GPU (use --cpu-smoke to exercise the code path)", file=sys.stderr)
        return 2
    else:
        device = "cuda"
    FAILURES.clear()
    check_moe(device, small=args.cpu_smoke)
    check_attention(device, small=args.cpu_smoke)
    check_elementwise(device, small=args.cpu_smoke)
    from gpu_decode import TINY, random_model

    from qwen3_api.model.config import ModelConfig

    config = ModelConfig.from_dict(TINY | {"torch_dtype": "float32"})
    check_engine(device, random_model(config, torch.device("cpu"), torch.float32))
    print("all checks passed" if not FAILURES else f"{len(FAILURES)} check(s) failed: {FAILURES}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

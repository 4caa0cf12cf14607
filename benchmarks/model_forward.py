"""One forward pass over a batch of 8 x 128 tokens on the tiny MoE model: ours vs transformers, same process.

Ours runs the 8 sequences as one flat batch through the paged KV cache (prefill), then one batched decode
step; transformers runs the same 8 x 128 input as a [8, 128] batch (and a decode step with its KV cache).
Both in float32 on CPU, same weights (transformers' model saved with save_pretrained, loaded by our loader).

    python benchmarks/model_forward.py [--batch 8 --seq-len 128 --repeats 20 --threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from contiguous_kv import make_contiguous_metadata

from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.model.loader import load_model


def timed_pair(ours: Callable[[], object], ref: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall time in ms of each, interleaved so background load hits both alike (the CPUs are shared)."""
    ours()
    ref()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((ours, ref)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], (time.perf_counter() - start) * 1000)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(Path(tmp) / "tiny-moe", dtype="float32", seed=0)
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        net, config = load_model(path, progress=False)
        net.warm_up_kernels()  # as the engine's runner does before serving
    b, n, block = args.batch, args.seq_len, 16
    ids = torch.randint(0, config.vocab_size, (b, n), generator=torch.Generator().manual_seed(0))
    caches = allocate_kv_cache(config, b * (-(-(n + 1) // block)), block, "cpu", torch.float32)
    prefill = make_contiguous_metadata([n] * b, "cpu", block, max_model_len=n + 1)
    positions = torch.arange(n).repeat(b)
    flat = ids.reshape(-1)
    decode = make_contiguous_metadata([1] * b, "cpu", block, context_lens=[n + 1] * b, max_model_len=n + 1)
    next_ids, next_pos = ids[:, -1].contiguous(), torch.full((b,), n)

    def ours_prefill() -> torch.Tensor:
        return net.compute_logits(net(flat, positions, prefill, caches))

    def ours_decode() -> torch.Tensor:
        return net.compute_logits(net(next_ids, next_pos, decode, caches))

    with torch.no_grad():
        ours_ms, ref_ms = timed_pair(ours_prefill, lambda: ref(ids).logits, args.repeats)
        past = ref(ids, use_cache=True).past_key_values

        def ref_decode() -> torch.Tensor:
            out = ref(next_ids[:, None], cache=past, use_cache=True).logits
            past.crop(-1)  # back to the prompt so every repeat decodes the same step
            return out

        ours_dec_ms, ref_dec_ms = timed_pair(ours_decode, ref_decode, args.repeats)
        # same function: the last prompt token's logits agree
        ours_last = ours_prefill().view(b, n, -1)[:, -1]
        diff = (ours_last - ref(ids).logits[:, -1]).abs().max().item()

    print(f"tiny MoE: {config.num_hidden_layers} layers, hidden {config.hidden_size}, {config.num_experts} experts "
          f"top-{config.num_experts_per_tok}, vocab {config.vocab_size}; float32, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"max |logit diff| ours vs transformers: {diff:.2e}")
    print(f"{'step':<22}{'qwen3-api ms':>14}{'transformers ms':>17}{'speed-up':>10}")
    for name, a, r in (
        (f"prefill {b}x{n}", ours_ms, ref_ms),
        (f"decode {b}x1 (ctx {n})", ours_dec_ms, ref_dec_ms),
    ):
        print(f"{name:<22}{a:>14.2f}{r:>17.2f}{r / a:>9.2f}x")


if __name__ == "__main__":
    main()

"""Offline throughput on API-shaped traffic: our engine vs transformers' batched generate, same process.

64 requests on a small MoE (8 layers, hidden 512, 32 experts, top-4) with the real Qwen3 tokenizer and
vocabulary (151,936 rows of lm_head). Every prompt is the same 128-token system prefix followed by 16..384
unique tokens; each request asks for its own number of output tokens (16..256, ignore_eos, greedy).

Ours: one LLM.generate call with one SamplingParams per prompt. Reference: transformers' generate over the
whole batch (left padding, static batching: it runs until the longest request is done); only the tokens
each request asked for count as useful. Prints useful output tokens/s of both, the ratio, and where our
engine's time goes (scheduler, input preparation + forward, lm_head, sampler, bookkeeping).

    python benchmarks/offline_throughput.py [--num-requests 64] [--skip-reference] [--threads N]

On a CPU shared with other busy processes use --threads 1: two OpenMP threads competing for two busy cores
spin-wait and run many times slower (both engines alike, but the run takes far longer).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout, installed or not

from qwen3_api.demo.tiny import make_tiny_model  # noqa: E402
from qwen3_api.engine.args import EngineArgs  # noqa: E402
from qwen3_api.engine.llm_engine import LLMEngine  # noqa: E402
from qwen3_api.engine.sampling_params import SamplingParams  # noqa: E402
from qwen3_api.llm import LLM  # noqa: E402
from qwen3_api.model.loader import load_model  # noqa: E402

BENCH_MOE = dict(layers=8, hidden=512, experts=32, top_k=4, heads=8, kv_heads=4, head_dim=64,
                 intermediate=1024, moe_intermediate=256)


def make_bench_model(out_dir: Path, tokenizer_dir: Path) -> Path:
    """The benchmark MoE checkpoint (float32, random weights, the real tokenizer)."""
    return make_tiny_model(out_dir, tokenizer_dir=tokenizer_dir, dtype="float32", seed=0, **BENCH_MOE)


def make_workload(num: int, vocab: int, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Prompts (shared 128-token prefix + 16..384 unique tokens) and per-request output lengths (16..256)."""
    rng = random.Random(seed)
    prefix = [rng.randrange(vocab) for _ in range(128)]
    prompts = [prefix + [rng.randrange(vocab) for _ in range(rng.randint(16, 384))] for _ in range(num)]
    max_tokens = [rng.randint(16, 256) for _ in range(num)]
    return prompts, max_tokens


class StepProfiler:
    """Wall time of the engine's parts, by wrapping its collaborators' entry points."""

    def __init__(self, engine: LLMEngine) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0
        self._wrap(engine.scheduler, "schedule", "schedule")
        self._wrap(engine.runner, "execute", "runner (inputs + forward + lm_head)")
        self._wrap(engine.runner.model, "forward", "  of which model forward")
        self._wrap(engine.runner.model, "compute_logits", "  of which lm_head")
        self._wrap(engine.sampler, "__call__", "sampler", instance_call=True)
        self._wrap(engine, "step", "step total")

    def _wrap(self, obj: object, name: str, label: str, instance_call: bool = False) -> None:
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[label] += time.perf_counter() - start
                if label == "step total":
                    self.steps += 1

        if instance_call:  # __call__ is looked up on the type: wrap through a forwarding attribute
            engine_sampler = obj

            class Timed:
                def __call__(self, *a, **k):
                    return timed(*a, **k)

                def __getattr__(self, item):
                    return getattr(engine_sampler, item)

            self._replacement = Timed()
            return
        setattr(obj, name, timed)

    def install_sampler(self, engine: LLMEngine) -> None:
        engine.sampler = self._replacement

    def report(self, wall: float) -> str:
        lines = [f"  engine steps: {self.steps}"]
        for label in ("step total", "schedule", "runner (inputs + forward + lm_head)", "  of which model forward",
                      "  of which lm_head", "sampler"):
            t = self.totals.get(label, 0.0)
            lines.append(f"  {label:<40} {t:8.2f} s  {100 * t / wall:5.1f} %")
        rest = self.totals["step total"] - sum(
            self.totals[k] for k in ("schedule", "runner (inputs + forward + lm_head)", "sampler")
        )
        lines.append(f"  {'bookkeeping (outputs, stops, forks)':<40} {rest:8.2f} s  {100 * rest / wall:5.1f} %")
        return "\n".join(lines)


def run_ours(path: Path, prompts, max_tokens, args) -> tuple[float, int, str, LLMEngine]:
    engine_args = EngineArgs(model=str(path), dtype="float32", device="cpu", kv_cache_memory=args.kv_gib,
                             max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                             max_model_len=4096)
    llm = LLM.from_engine(LLMEngine.from_engine_args(engine_args))
    profiler = StepProfiler(llm.engine)
    profiler.install_sampler(llm.engine)
    params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for m in max_tokens]
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    produced = sum(len(o.outputs[0].token_ids) for o in outs)
    assert produced == sum(max_tokens), "every request must get exactly the tokens it asked for"
    return wall, produced, profiler.report(wall), llm.engine


def run_reference(path: Path, prompts, max_tokens, batch_size: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    pad = 151643
    start = time.perf_counter()
    for lo in range(0, len(prompts), batch_size):
        chunk = prompts[lo : lo + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        longest = max(max_tokens[lo : lo + batch_size])
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=longest, min_new_tokens=longest,
                           do_sample=False, pad_token_id=pad)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--tokenizer", type=Path, default=REPO.parent / "shared" / "qwen3-tokenizer")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--reference-batch-size", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--kv-gib", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = make_bench_model(Path(tmp) / "bench-moe", args.tokenizer)
        _, config = load_model(path, progress=False)
        prompts, max_tokens = make_workload(args.num_requests, 151_669)
        useful = sum(max_tokens)
        print(f"{args.num_requests} requests, prompt tokens {sum(map(len, prompts))}, "
              f"useful output tokens {useful}, model {BENCH_MOE}, vocab {config.vocab_size}, "
              f"threads {torch.get_num_threads()}")
        wall, produced, report, engine = run_ours(path, prompts, max_tokens, args)
        stats = engine.stats()
        ref_wall = None if args.skip_reference else run_reference(path, prompts, max_tokens, args.reference_batch_size)

    print()
    print(f"{'engine':<34} {'wall s':>8} {'useful tok/s':>13}")
    print(f"{'qwen3-api LLM.generate':<34} {wall:8.2f} {useful / wall:13.1f}")
    if ref_wall is not None:
        print(f"{'transformers generate (static)':<34} {ref_wall:8.2f} {useful / ref_wall:13.1f}")
        print(f"{'ratio (ours / transformers)':<34} {'':>8} {ref_wall / wall:12.2f}x")
    print()
    print(f"where our time goes (prefix cache hit rate {stats.prefix_cache_hit_rate:.1%}, "
          f"preemptions {stats.num_preemptions}):")
    print(report)


if __name__ == "__main__":
    main()

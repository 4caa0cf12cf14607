"""Prefill on a GGUF file: our engine's prompt tokens/s vs llama.cpp's (llama-bench pp), same file and threads.

Ours: LLMEngine over the file, a fresh random prompt of N tokens (no prefix cache), max_tokens 1: the time of
the steps until the first token (prefill chunks of the engine's default 2,048-token budget, lm_head of the last
position, sampling). llama.cpp: ``llama-bench -p N -n 0`` (its defaults: batch 2,048, micro-batch 512).
Rounds alternate the sides, each in a fresh process (ours after a warm-up request); medians are quoted.
Target: tokens/s >= 1.0x llama.cpp's at 512 and 4,096 tokens.

    python benchmarks/gguf_prefill.py --model /work/gguf_bench/small-Q4_K_M.gguf [--prompts 512 4096] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_common import (  # noqa: E402
    DEFAULT_LLAMA_BIN,
    generate,
    header,
    llama_bench_rusage,
    load_engine,
    median,
    random_prompt,
    row,
    run_child,
)


def child(args: argparse.Namespace) -> None:
    longest = max(args.prompts)
    engine, _ = load_engine(args.model, args.threads, longest + 64)
    generate(engine, random_prompt(args.warmup_prompt, 10_000 + args.seed), 2, "warm")
    result = {}
    for n in args.prompts:
        first_s, _ = generate(engine, random_prompt(n, args.seed * 100 + n), 1, f"p{n}")
        result[str(n)] = n / first_s
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, nargs="+", default=[512, 4096])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup-prompt", type=int, default=256)
    ap.add_argument("--llama-bin", type=Path, default=DEFAULT_LLAMA_BIN)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    ours: dict[int, list[float]] = {n: [] for n in args.prompts}
    theirs: dict[int, list[float]] = {n: [] for n in args.prompts}
    for r in range(args.rounds):
        res = run_child(Path(__file__), ["--model", str(args.model), "--threads", str(args.threads), "--prompts",
                                         *map(str, args.prompts), "--warmup-prompt", str(args.warmup_prompt),
                                         "--seed", str(args.seed + r + 1)])
        for n in args.prompts:
            ours[n].append(res[str(n)])
            secs, _ = llama_bench_rusage(args.llama_bin, args.model, args.threads, prompt=n)
            theirs[n].append(n / median(secs))
        print(f"round {r + 1}: " + ", ".join(f"pp{n} ours {ours[n][-1]:.1f} llama.cpp {theirs[n][-1]:.1f} tok/s"
                                            for n in args.prompts), flush=True)
    print(f"\n{args.model.name}: prefill, {args.threads} threads, median of {args.rounds} alternating rounds")
    print(header())
    for n in args.prompts:
        print(row(f"prefill {n} tokens/s", ours[n], theirs[n], "tok/s", True, ">=1.0"))


if __name__ == "__main__":
    main()

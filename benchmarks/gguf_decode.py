"""Single-stream decode on a GGUF file: our engine's ms/token vs llama.cpp's (llama-bench tg), same file/threads.

Ours: LLMEngine over the file (quantized kernels), a random 128-token prompt, greedy, --new-tokens tokens with
EOS ignored; ms/token over the decode steps (the prompt's step excluded). llama.cpp: ``llama-bench -p 0 -n N
-d 128`` (N tokens generated after a 128-token context: the same work). Rounds alternate the two sides, each in
a fresh process (ours after a warm-up request that also faults the file's pages in); the table quotes medians.
Also prints each side's peak resident memory and our load time. Target: ms/token <= 1.0x llama.cpp's.

    python benchmarks/gguf_decode.py --model /work/gguf_bench/small-Q4_K_M.gguf [--rounds 3] [--threads 2]
    python benchmarks/gguf_decode.py --model /work/bigmodel/qwen3-30b-a3b-shape-Q4_K_M.gguf --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_common import (  # noqa: E402
    DEFAULT_LLAMA_BIN,
    fmt,
    generate,
    header,
    llama_bench_rusage,
    load_engine,
    median,
    peak_rss_gib,
    random_prompt,
    row,
    run_child,
)

CONTEXT = 128


def child(args: argparse.Namespace) -> None:
    engine, load_s = load_engine(args.model, args.threads, CONTEXT + args.new_tokens + args.warmup_prompt + 16)
    generate(engine, random_prompt(args.warmup_prompt, 10_000 + args.seed), 8, "warm")  # pages in, first calls
    _, decode_s = generate(engine, random_prompt(CONTEXT, args.seed), args.new_tokens, "run")
    print(json.dumps({"ms_per_token": 1000 * decode_s / (args.new_tokens - 1), "load_s": load_s,
                      "peak_rss_gib": peak_rss_gib()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a GGUF file (e.g. llama-quantize Q4_K_M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup-prompt", type=int, default=256, help="tokens of our warm-up request's prompt")
    ap.add_argument("--llama-bin", type=Path, default=DEFAULT_LLAMA_BIN)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    ours, theirs, ours_rss, their_rss, loads = [], [], [], [], []
    for r in range(args.rounds):
        res = run_child(Path(__file__), ["--model", str(args.model), "--threads", str(args.threads), "--new-tokens",
                                         str(args.new_tokens), "--warmup-prompt", str(args.warmup_prompt),
                                         "--seed", str(args.seed + r)])
        ours.append(res["ms_per_token"])
        ours_rss.append(res["peak_rss_gib"])
        loads.append(res["load_s"])
        secs, rss = llama_bench_rusage(args.llama_bin, args.model, args.threads, gen=args.new_tokens, depth=CONTEXT)
        theirs.append(1000 * median(secs) / args.new_tokens)
        their_rss.append(rss)
        print(f"round {r + 1}: ours {ours[-1]:.2f} ms/token, llama.cpp {theirs[-1]:.2f} ms/token", flush=True)
    print(f"\n{args.model.name}: decode after a {CONTEXT}-token context, {args.new_tokens} tokens, greedy, "
          f"{args.threads} threads, median of {args.rounds} alternating rounds")
    print(header())
    print(row("decode ms/token", ours, theirs, "ms", False, "<=1.0"))
    print(row("peak RSS of the process", ours_rss, their_rss, "GiB", False, ""))
    print(f"our load time (file mapped, network built): median {median(loads):.2f} s {fmt(loads)}")


if __name__ == "__main__":
    main()

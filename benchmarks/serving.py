"""Serving throughput over HTTP vs the offline engine on the same work, same process, side by side.

64 concurrent streaming chat requests (the official wire format: SSE chunks, usage chunk, [DONE]) against
`qwen3-api serve` on the small MoE config (8 layers, hidden 512, 32 experts, top-4, the real Qwen3 tokenizer
and vocabulary), then the same prompts (rendered by the same chat template, thinking off) through the offline
`LLM.generate`. Both are greedy with the end-of-turn tokens banned, so every request generates exactly
--max-tokens tokens on both sides: the same work. Prints output tokens/s of each and their ratio (target >= 90 %),
plus time to first token and inter-token latency (p50 / p99) as the HTTP client sees them.

    python benchmarks/serving.py [--num-requests 64] [--max-tokens 64] [--rounds 2] [--tokenizer DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from qwen3_api.chat.template import ChatTemplate
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.llm import LLM

REPO = Path(__file__).resolve().parents[1]
MODEL = "qwen/qwen3-30b-a3b"
# The same small MoE as benchmarks/offline_throughput.py.
BENCH_MOE = dict(layers=8, hidden=512, experts=32, top_k=4, heads=8, kv_heads=4, head_dim=64,
                 intermediate=1024, moe_intermediate=256)
WORDS = ("the model serves requests over http with streaming chunks and a usage report at the end of each "
         "answer while the engine batches every running sequence into one step").split()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by each thread of process ``pid`` (Linux /proc), keyed by thread id."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def make_requests(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """n conversations with user messages of 8..120 words (deterministic)."""
    rng = random.Random(seed)
    return [[{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 120)))}]
            for _ in range(n)]


def banned_ids(tok: ChatTokenizer) -> dict[str, float]:
    """The end-of-turn / end-of-text ids, banned so every request runs to max_tokens on both sides."""
    ids = {tok.eos_token_id, tok.token_id("<|endoftext|>"), tok.token_id("<|im_end|>")}
    return {str(i): -100.0 for i in ids if i is not None}


def run_offline(llm: LLM, prompts: list[list[int]], max_tokens: int, bias: dict[str, float],
                in_thread: bool = False) -> tuple[float, int]:
    """Seconds and output tokens of one LLM.generate over every prompt.

    ``in_thread``: call it from a fresh thread, as the server's engine runs (on the shared CPU box, torch ran
    the same generate ~2.5x faster off the main thread; both are measured so the ratio is like for like).
    """
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logit_bias={int(k): v for k, v in bias.items()})
    result: list[tuple[float, int]] = []

    def work() -> None:
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        result.append((time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs)))

    if in_thread:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    else:
        work()
    return result[0]


async def _one(client: httpx.AsyncClient, body: dict, t0: float, ttft: list[float], itl: list[float]
               ) -> int:
    last = None
    usage = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]["completion_tokens"]
            if any(c["delta"].get("content") for c in event.get("choices", [])):
                now = time.perf_counter()
                if last is None:
                    ttft.append(now - t0)
                else:
                    itl.append(now - last)
                last = now
    return usage


async def run_http(base: str, conversations: list, max_tokens: int, bias: dict[str, float]
                   ) -> tuple[float, int, list[float], list[float]]:
    """All requests at once, streamed; returns seconds, output tokens (from usage), TTFTs, ITLs."""
    limits = httpx.Limits(max_connections=len(conversations) + 8, max_keepalive_connections=len(conversations) + 8)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        warm = {"model": MODEL, "messages": conversations[0], "max_tokens": 4, "stream": True,
                "chat_template_kwargs": {"enable_thinking": False}}
        await _one(client, warm, time.perf_counter(), [], [])
        ttft: list[float] = []
        itl: list[float] = []
        bodies = [{"model": MODEL, "messages": conv, "max_tokens": max_tokens, "stream": True, "temperature": 0.0,
                   "logit_bias": bias, "stream_options": {"include_usage": True},
                   "chat_template_kwargs": {"enable_thinking": False}} for conv in conversations]
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(_one(client, b, t0, ttft, itl) for b in bodies))
        return time.perf_counter() - t0, sum(counts), ttft, itl


def run_http_measured(port: int, server_pid: int, conversations: list, max_tokens: int, bias: dict[str, float]
                      ) -> tuple[float, int, list[float], list[float], float, float]:
    """run_http plus CPU seconds of the server's event-loop thread (the HTTP layer) and of all its threads."""
    before = thread_cpu(server_pid)
    result = asyncio.run(run_http(f"http://127.0.0.1:{port}", conversations, max_tokens, bias))
    after = thread_cpu(server_pid)
    main = after.get(str(server_pid), 0.0) - before.get(str(server_pid), 0.0)
    total = sum(after.values()) - sum(before.get(k, 0.0) for k in after)
    return (*result, main, total)


def start_server(model_dir: Path, port: int, args: argparse.Namespace, workdir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", str(model_dir), "--port", str(port),
           "--no-auth", "--database-url", f"sqlite:///{workdir / 'ledger.db'}", "--device", args.device,
           "--kv-cache-memory", str(args.kv_cache_memory), "--max-num-seqs", str(args.num_requests),
           "--log-level", "warning"]
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{(workdir / 'server.log').read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become healthy in 300 s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--tokenizer", default=os.environ.get("QWEN3_TOKENIZER_DIR",
                                                         str(REPO.parent / "shared" / "qwen3-tokenizer")))
    p.add_argument("--device", default="auto")
    p.add_argument("--kv-cache-memory", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=2,
                   help="alternate offline and HTTP this many times and keep each side's best (shared machines)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        work = Path(tmp)
        model_dir = make_tiny_model(work / "model", tokenizer_dir=args.tokenizer, dtype="float32", seed=0,
                                    **BENCH_MOE)
        tok = ChatTokenizer.from_dir(model_dir)
        template = ChatTemplate(tok)
        conversations = make_requests(args.num_requests)
        prompts = [template.encode(c, None, True, enable_thinking=False) for c in conversations]
        bias = banned_ids(tok)
        engine_kw = dict(device=args.device, kv_cache_memory=args.kv_cache_memory, max_num_seqs=args.num_requests)

        # Both sides loaded at once, then measured alternately: on a shared machine the load drifts, and
        # alternating rounds (best of each) compares them under the same conditions.
        llm = LLM(model_dir, **engine_kw)
        llm.generate(prompts[:2], SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
        port = _free_port()
        server = start_server(model_dir, port, args, work)
        http_runs, off_runs, main_runs = [], [], []
        try:
            for _ in range(args.rounds):
                main_runs.append(run_offline(llm, prompts, args.max_tokens, bias))
                off_runs.append(run_offline(llm, prompts, args.max_tokens, bias, in_thread=True))
                http_runs.append(run_http_measured(port, server.pid, conversations, args.max_tokens, bias))
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        del llm
        gc.collect()
        http_s, http_tokens, ttft, itl, loop_cpu, server_cpu = min(http_runs, key=lambda r: r[0])
        off_s, off_tokens = min(off_runs, key=lambda r: r[0])
        main_s, main_tokens = min(main_runs, key=lambda r: r[0])
        print("rounds (s): offline main thread " + ", ".join(f"{r[0]:.1f}" for r in main_runs) +
              " | offline worker thread " + ", ".join(f"{r[0]:.1f}" for r in off_runs) +
              " | HTTP " + ", ".join(f"{r[0]:.1f}" for r in http_runs))

    http_tps = http_tokens / http_s
    off_tps = off_tokens / off_s if off_tokens else float("nan")
    print(f"\n{args.num_requests} concurrent requests x {args.max_tokens} output tokens, prompts "
          f"{min(map(len, prompts))}..{max(map(len, prompts))} tokens, small MoE "
          f"(8 layers, hidden 512, 32 experts top-4), device={args.device}, best of {args.rounds} alternating rounds\n")
    main_tps = main_tokens / main_s
    print(f"{'':28}{'HTTP (serve)':>16}{'offline LLM':>16}{'ratio':>10}{'offline, main':>16}{'ratio':>10}")
    print(f"{'output tokens':28}{http_tokens:>16d}{off_tokens:>16d}{'':>10}{main_tokens:>16d}")
    print(f"{'wall time (s)':28}{http_s:>16.2f}{off_s:>16.2f}{'':>10}{main_s:>16.2f}")
    print(f"{'throughput (tok/s)':28}{http_tps:>16.1f}{off_tps:>16.1f}{http_tps / off_tps:>9.1%}"
          f"{main_tps:>16.1f}{http_tps / main_tps:>9.1%}")
    print(f"{'TTFT p50 / p99 (ms)':28}{_percentile(ttft, 50) * 1e3:>8.0f} /{_percentile(ttft, 99) * 1e3:>6.0f}")
    print(f"{'ITL p50 / p99 (ms)':28}{_percentile(itl, 50) * 1e3:>8.1f} /{_percentile(itl, 99) * 1e3:>6.1f}")
    print(f"{'server CPU: HTTP loop / all':28}{loop_cpu:>8.1f} /{server_cpu:>6.1f} s  "
          f"(the API layer's own share: {loop_cpu / server_cpu:.1%})")
    target = "met" if http_tps / off_tps >= 0.9 else "NOT met"
    print("\n'offline LLM' runs generate() on a worker thread like the server's engine; 'offline, main' on the")
    print(f"main thread. Target HTTP >= 90 % of offline (worker thread, like for like): {target}")


if __name__ == "__main__":
    main()

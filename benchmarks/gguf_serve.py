"""Serving a GGUF file over HTTP: `qwen3-api serve` vs `llama-server -np N`, output tokens/s at N clients.

N closed-loop clients each send --per-client chat completions one after another (API-shaped: one shared
system prompt of ~400 tokens, then a unique user message of 8..120 words; temperature 0, max_tokens
--max-tokens, the end-of-turn tokens banned through logit_bias so every request runs to max_tokens on both
sides). Our server runs with --max-num-seqs N (continuous batching, prefix cache on: its default); llama.cpp's
with -np N slots (continuous batching, its default) and the file's own chat template (--jinja), the same
threads. Each (round, N) starts each server fresh, alternating which goes first; the table quotes medians of
output tokens/s (completion tokens from the responses' usage / wall time), plus load time (spawn to a healthy
/health) and resident memory after the run. Target: ours >= 1.3x llama-server's at 8 and 16 clients.

    python benchmarks/gguf_serve.py --model /work/gguf_bench/small-Q4_K_M.gguf [--clients 8 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_common import DEFAULT_LLAMA_BIN, header, llama_tool, row, rss_gib  # noqa: E402

MODEL = "qwen/qwen3-30b-a3b"
BANNED = {"151643": -100.0, "151645": -100.0}  # <|endoftext|>, <|im_end|>
WORDS = ("the model serves requests over http with streaming chunks and a usage report at the end of each "
         "answer while the engine batches every running sequence into one step").split()
SYSTEM = (
    "You are a helpful assistant for an online store. Answer briefly and politely. Follow these rules: "
    + " ".join(f"Rule {i}: when a customer asks about orders, shipping, returns, refunds, warranties, sizes, "
               f"colors or prices, look the facts up first and never invent an order number or a date." for i in
               range(1, 13))
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    return [[{"role": "system", "content": SYSTEM},
             {"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 120)))}]
            for _ in range(n)]


def start(cmd: list[str], port: int, log: Path, timeout: float) -> tuple[subprocess.Popen, float]:
    """Spawn a server; (process, seconds until /health answered 200)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"{cmd[0]} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    sys.exit(f"{cmd[0]} did not become healthy in {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def _client(client: httpx.AsyncClient, convs: list, max_tokens: int) -> int:
    tokens = 0
    for conv in convs:
        body = {"model": MODEL, "messages": conv, "max_tokens": max_tokens, "temperature": 0.0,
                "logit_bias": BANNED, "chat_template_kwargs": {"enable_thinking": False}}
        r = await client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        tokens += r.json()["usage"]["completion_tokens"]
    return tokens


async def workload(port: int, clients: int, per_client: int, max_tokens: int, seed: int) -> tuple[float, int]:
    """(seconds, completion tokens) of ``clients`` closed-loop clients, after one warm-up request."""
    convs = conversations(clients * per_client + 1, seed)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3600, limits=limits) as client:
        await _client(client, convs[-1:], 4)
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(_client(client, convs[i * per_client:(i + 1) * per_client], max_tokens)
                                        for i in range(clients)))
        return time.perf_counter() - t0, sum(counts)


def ours_cmd(args: argparse.Namespace, port: int, clients: int, work: Path) -> list[str]:
    return [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", str(args.model), "--port", str(port),
            "--no-auth", "--database-url", f"sqlite:///{work / f'ledger-{port}.db'}", "--device", "cpu",
            "--max-num-seqs", str(clients), "--max-model-len", str(args.ctx), "--kv-cache-memory",
            str(args.kv_cache_gib), "--log-level", "warning", "--no-console"]


def llama_cmd(args: argparse.Namespace, port: int, clients: int) -> list[str]:
    return [str(llama_tool(args.llama_bin, "llama-server")), "-m", str(args.model), "--port", str(port),
            "-np", str(clients), "-c", str(args.ctx * clients), "-t", str(args.threads), "-tb", str(args.threads),
            "--jinja", "--no-webui", "--log-disable"]


def one(side: str, args: argparse.Namespace, clients: int, seed: int, work: Path) -> tuple[float, float, float]:
    """(output tokens/s, load seconds, RSS GiB after the run) of one server at ``clients`` clients."""
    port = _free_port()
    cmd = ours_cmd(args, port, clients, work) if side == "ours" else llama_cmd(args, port, clients)
    proc, load_s = start(cmd, port, work / f"{side}-{clients}.log", args.start_timeout)
    try:
        secs, tokens = asyncio.run(workload(port, clients, args.per_client, args.max_tokens, seed))
        rss = rss_gib(proc.pid)  # after the run: the file's pages the server touched + its KV cache
    finally:
        stop(proc)
    return tokens / secs, load_s, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--per-client", type=int, default=2, help="requests each client sends in turn")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence (ours) / per slot (llama.cpp)")
    ap.add_argument("--kv-cache-gib", type=float, default=2.0, help="our KV cache budget, GiB (> 1)")
    ap.add_argument("--start-timeout", type=float, default=900)
    ap.add_argument("--llama-bin", type=Path, default=DEFAULT_LLAMA_BIN)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    results = {(side, n): ([], [], []) for side in ("ours", "llama") for n in args.clients}
    with tempfile.TemporaryDirectory(prefix="gguf-serve-") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for n in args.clients:
                order = ("ours", "llama") if r % 2 == 0 else ("llama", "ours")
                for side in order:
                    tps, load_s, rss = one(side, args, n, 1000 * r + n, work)
                    for lst, v in zip(results[(side, n)], (tps, load_s, rss), strict=True):
                        lst.append(v)
                    print(f"round {r + 1}, {n} clients, {side}: {tps:.1f} tok/s, load {load_s:.1f} s, "
                          f"RSS {rss:.2f} GiB", flush=True)
    print(f"\n{args.model.name}: HTTP chat completions, {args.per_client} requests per client, max_tokens "
          f"{args.max_tokens}, {args.threads} threads, median of {args.rounds} rounds")
    print(header())
    for n in args.clients:
        ours, llama = results[("ours", n)], results[("llama", n)]
        print(row(f"{n} clients output tok/s", ours[0], llama[0], "tok/s", True, ">=1.3"))
    allo = [v for n in args.clients for v in results[("ours", n)][1]]
    alll = [v for n in args.clients for v in results[("llama", n)][1]]
    print(row("load (spawn to /health)", allo, alll, "s", False, ""))
    allo = [v for n in args.clients for v in results[("ours", n)][2]]
    alll = [v for n in args.clients for v in results[("llama", n)][2]]
    print(row("RSS after the run", allo, alll, "GiB", False, ""))


if __name__ == "__main__":
    main()

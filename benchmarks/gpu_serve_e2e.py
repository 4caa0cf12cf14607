"""End-to-end `qwen3-api serve` through the OpenAI SDK (issue 16, Part B step 4): thinking, tools, a JSON schema,
and N concurrent streams, against a server running as a child process.

The H200 has no network, so no real checkpoint: the model is the real Qwen3-30B-A3B shape (hidden 2048, 128
experts of width 768, top-8, 32/4 heads, vocabulary 151,936) with ``--layers`` of its 48 layers and random
weights, made on the GPU and written in the Hugging Face layout (bf16, or ``--quant fp8``: the official block-FP8
format, served by the W8A8 Triton kernels), with the demo tokenizer. Random weights say nothing about words, so
the checks are on structure, as tests/e2e does: the thought opened (logit bias) and closed by the reasoning
budget, a forced tool call whose arguments validate against its schema, a JSON-schema answer that parses and
validates (or a "length" finish, reported), and every stream ending with its tokens and a usage chunk. The streams
report output tokens/s over the whole run and time to first token (p50 / p99).

    python benchmarks/gpu_serve_e2e.py --quant fp8 --kv-cache-dtype fp8 --json-out e2e.json   # on the GPU
    python benchmarks/gpu_serve_e2e.py --cpu-smoke                                            # tiny, CPU
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout, installed or not

MODEL = "qwen/qwen3-30b-a3b"
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
FLAG = {"type": "object", "additionalProperties": False, "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
TOOLS = [{"type": "function", "function": {"name": "set_flag", "description": "Set the flag.", "parameters": FLAG}}]


def make_model(out: Path, args: argparse.Namespace) -> Path:
    """The random checkpoint the server loads (gpu_models.write_random_checkpoint)."""
    import torch
    from gpu_models import QWEN3_30B_A3B, TINY, write_random_checkpoint

    if args.cpu_smoke:
        # larger than the demo tokenizer's 1,536 tokens, as the real 151,936 is than its tokenizer: the ids beyond
        # the tokenizer are never sampled
        cfg = TINY | {"vocab_size": 2048}
        from qwen3_api.kernels import triton_kernels  # the interpreter keeps FP8 weights on the CPU

        kernels = triton_kernels() if args.quant == "fp8" else None
        return write_random_checkpoint(out, cfg, torch.device("cpu"), fp8=args.quant == "fp8", kernels=kernels)
    cfg = QWEN3_30B_A3B | {"num_hidden_layers": args.layers}
    return write_random_checkpoint(out, cfg, torch.device("cuda"), fp8=args.quant == "fp8")


def start_server(model: Path, args: argparse.Namespace, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m qwen3_api.cli serve` on a free port in its own process group; waits for /health."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--no-auth", "--model", str(model), "--port", str(port),
           "--database-url", f"sqlite:///{work / 'db.sqlite'}", "--max-model-len", str(args.max_model_len),
           "--max-num-seqs", str(max(args.streams, 8)), "--kv-cache-dtype", args.kv_cache_dtype]  # fmt: skip
    if args.cpu_smoke:
        cmd += ["--device", "cpu", "--kv-cache-memory", "0.05"]
    log = open(work / "server.log", "w")  # noqa: SIM115 - the child writes it for its whole life
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "QWEN3_API_HOME": str(work / "home")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.startup_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{(work / 'server.log').read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"server not healthy after {args.startup_timeout_s} s")
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the server's group (a clean shutdown), SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def token_id(model: Path, text: str) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model / "tokenizer.json")).token_to_id(text)


def check_thinking(client: Any, model: Path) -> dict[str, Any]:
    """A thought opened by a logit bias on <think>, closed by the server at a 16-token reasoning budget."""
    c = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Think, then say hi."}], max_tokens=80,
        logit_bias={str(token_id(model, "<think>")): 100.0}, extra_body={"reasoning": {"max_tokens": 16}},
    )  # fmt: skip
    reasoning = c.choices[0].message.model_extra.get("reasoning") or ""
    tokens = c.usage.completion_tokens_details.reasoning_tokens
    ok = bool(reasoning) and 16 <= tokens < c.usage.completion_tokens and "<think>" not in (c.choices[0].message.content or "")
    return {"ok": ok, "reasoning_tokens": tokens, "completion_tokens": c.usage.completion_tokens,
            "finish_reason": c.choices[0].finish_reason}  # fmt: skip


def check_tools(client: Any) -> dict[str, Any]:
    """A named tool_choice: one call to set_flag whose arguments validate (or a "length" finish)."""
    import jsonschema

    c = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Set the flag."}], max_tokens=200, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "set_flag"}}, extra_body=NO_THINK,
    )  # fmt: skip
    choice = c.choices[0]
    calls = choice.message.tool_calls or []
    ok = choice.finish_reason == "length"
    if choice.finish_reason == "tool_calls" and [t.function.name for t in calls] == ["set_flag"]:
        jsonschema.validate(json.loads(calls[0].function.arguments), FLAG)
        ok = True
    return {"ok": ok, "finish_reason": choice.finish_reason,
            "arguments": calls[0].function.arguments if calls else None}  # fmt: skip


def check_json_schema(client: Any) -> dict[str, Any]:
    """response_format json_schema (strict): the content parses and validates (or a "length" finish)."""
    import jsonschema

    c = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is the flag set?"}], max_tokens=200, extra_body=NO_THINK,
        response_format={"type": "json_schema", "json_schema": {"name": "flag", "strict": True, "schema": FLAG}},
    )  # fmt: skip
    choice = c.choices[0]
    ok = choice.finish_reason == "length"
    if choice.finish_reason == "stop":
        jsonschema.validate(json.loads(choice.message.content), FLAG)
        ok = True
    return {"ok": ok, "finish_reason": choice.finish_reason, "content": choice.message.content}


async def one_stream(client: Any, i: int, max_tokens: int, ban: dict[str, float]) -> dict[str, Any]:
    start = time.perf_counter()
    first, chunks, usage = None, 0, None
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"Request {i}: tell me a long story."}],
        max_tokens=max_tokens, temperature=0.0, stream=True, stream_options={"include_usage": True},
        logit_bias=ban, extra_body=NO_THINK,
    )  # fmt: skip
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - start
            chunks += 1
    return {"ttft_s": first, "chunks": chunks, "completion_tokens": usage.completion_tokens if usage else 0,
            "elapsed_s": time.perf_counter() - start}  # fmt: skip


async def check_streams(base: str, model: Path, n: int, max_tokens: int) -> dict[str, Any]:
    """n concurrent streams of exactly max_tokens tokens (end-of-turn banned): all complete, with usage."""
    from openai import AsyncOpenAI

    ban = {str(token_id(model, t)): -100.0 for t in ("<|im_end|>", "<|endoftext|>")}
    client = AsyncOpenAI(base_url=base + "/v1", api_key="none", timeout=600, max_retries=0)
    start = time.perf_counter()
    results = await asyncio.gather(*(one_stream(client, i, max_tokens, ban) for i in range(n)))
    wall = time.perf_counter() - start
    await client.close()
    tokens = sum(r["completion_tokens"] for r in results)
    ttfts = sorted(r["ttft_s"] for r in results if r["ttft_s"] is not None)
    ok = all(r["completion_tokens"] == max_tokens and r["chunks"] > 0 for r in results)
    return {"ok": ok, "streams": n, "max_tokens": max_tokens, "output_tokens": tokens, "wall_s": round(wall, 2),
            "output_tok_s": round(tokens / wall, 1),
            "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
            "ttft_p99_s": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], 3) if ttfts else None}  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Make the model, serve it, run every check; the results (each with "ok")."""
    from openai import OpenAI

    t0 = time.perf_counter()
    model = args.model or make_model(work / "model", args)
    made_s = time.perf_counter() - t0
    print(f"model ready in {made_s:.1f} s: {model}", flush=True)
    proc, base = start_server(model, args, work)
    up_s = time.perf_counter() - t0 - made_s
    print(f"server healthy in {up_s:.1f} s", flush=True)
    results: dict[str, Any] = {"model_s": round(made_s, 1), "startup_s": round(up_s, 1)}
    try:
        client = OpenAI(base_url=base + "/v1", api_key="none", timeout=300, max_retries=0)
        card = client.models.list().data[0]
        results["model_card"] = {"id": card.id, "quantization": (card.model_extra or {}).get("quantization")}
        for name, fn in (("thinking", lambda: check_thinking(client, model)), ("tools", lambda: check_tools(client)),
                         ("json_schema", lambda: check_json_schema(client))):  # fmt: skip
            try:
                results[name] = fn()
            except Exception as exc:  # noqa: BLE001 - one failed check is reported, the others still run
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: {results[name]}", flush=True)
        results["streams"] = asyncio.run(check_streams(base, model, args.streams, args.max_tokens))
        print(f"streams: {results['streams']}", flush=True)
    finally:
        stop_server(proc)
        log = (work / "server.log").read_text(errors="replace")
        results["server_log_tail"] = log[-3000:]
    return results


def main(argv: list[str] | None = None) -> int:
    """0 when every check passed, 1 otherwise, 2 without a GPU (and without --cpu-smoke)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="serve this checkpoint instead of a random one")
    parser.add_argument("--layers", type=int, default=8, help="layers of the random real-shape model (of 48)")
    parser.add_argument("--quant", choices=["none", "fp8"], default="none")
    parser.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per stream")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--startup-timeout-s", type=float, default=300)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU: exercises the code path")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: the FP8 model is made on the CPU
        args.streams, args.max_tokens, args.max_model_len = min(args.streams, 4), min(args.max_tokens, 8), 1024
    else:
        import torch

        if not torch.cuda.is_available():
            print("gpu_serve_e2e.py needs a CUDA GPU (or --cpu-smoke)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args, Path(tmp))
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    passed = all(results[k]["ok"] for k in ("thinking", "tools", "json_schema", "streams"))
    results["passed"] = passed
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print("e2e: all checks passed" if passed else "e2e: some checks FAILED", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

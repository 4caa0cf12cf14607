"""Mixed-load soak of a real `qwen3-api serve` process, with the platform's invariants checked at the end.

A tiny random checkpoint with the real Qwen3 tokenizer, keys with credit (one too poor to run anything, one
rate-limited), and --requests requests at --concurrency: chat and legacy completions, whole and streamed,
thinking on and off, tools (auto / required / named), JSON schemas, n > 1, logprobs, stop strings; bad input
(lone surrogates, empty prompts, out-of-range values, unknown models, broken JSON); clients that abandon their
request (streams closed after a few events, whole answers given up by a client timeout) on every route. Then a
burst of long streams and a SIGTERM. Invariants (the run exits 1 when one fails):

- no 5xx and no hang (every request answered, or abandoned on purpose, within --hang-s);
- every 4xx is OpenAI-shaped; every admitted response carries X-Generation-Id (== its body id) and X-Cost-Currency;
- the KV cache is free once the load stops (running = waiting = 0, kv_cache_usage = 0);
- the ledger: one row per admitted request, its cost == the catalog price of its tokens (exact Decimal), equal
  to the response's usage.cost; abandoned requests settled `cancelled`; each key's spent == the sum of its rows;
  no key below zero; after the SIGTERM, reserved == 0 for every key (nothing stranded);
- SIGTERM: every stream in flight ends with an error event then [DONE] (or finishes), all settle, exit code 0.

    python benchmarks/soak.py [--requests 1000] [--concurrency 16] [--db sqlite|postgresql] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = "qwen/qwen3-30b-a3b"
NO_EOS = {"151645": -100, "151643": -100}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}}, "required": ["city"],
    "additionalProperties": False}}},
         {"type": "function", "function": {"name": "flip", "parameters": {
             "type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}}]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["calm", "busy"]}},
          "required": ["ok", "mood"], "additionalProperties": False}
BAD = [  # (body or raw bytes, path, acceptable statuses)
    (b'{"model": "qwen/qwen3-30b-a3b", "messages": [{"role": "user", "content": "x\\ud800y"}]}', "chat", {400}),
    (b'{"model": "qwen/qwen3-30b-a3b", "messages": [{"role": "system", "content": "\\udfff"}, '
     b'{"role": "user", "content": "hi"}]}', "chat", {400}),
    (b'{"model": "qwen/qwen3-30b-a3b", "prompt": "a\\ud800"}', "completions", {400}),
    ({"model": MODEL, "prompt": []}, "completions", {400}),
    ({"model": MODEL, "prompt": [[]]}, "completions", {400}),
    ({"model": MODEL, "messages": []}, "chat", {400}),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": -1}, "chat", {400}),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "chat", {400}),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}, "chat", {400}),
    ({"model": "no/such-model", "messages": [{"role": "user", "content": "hi"}]}, "chat", {404}),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "missing"}}}, "chat", {400}),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}, "chat", {400}),
    (b'{"model": "qwen/qwen3-30b-a3b", "messages": [', "chat", {400}),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 99}, "chat", {400}),
    ({"model": MODEL, "messages": [{"role": "tool"}]}, "chat", {400}),
]


@dataclass
class Result:
    kind: str
    key: str
    status: int | None = None
    gen_id: str | None = None
    body_id: str | None = None
    currency: str | None = None
    usage: dict[str, Any] | None = None
    error_shape_ok: bool = True
    terminal: str | None = None  # streams: "done", "error+done", or what they ended with
    abandoned: bool = False
    hang: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error_shaped(body: Any) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err) and bool(err["message"])


def _chat_body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": rng.choice(
        ["Hello!", "What is 2+2?", "Tell me about Paris.", "你好", "Write a haiku. /no_think"])}],
        "max_tokens": rng.randint(1, 48), "temperature": rng.choice([0, 0.7, 1.0]), "seed": rng.randint(0, 99)}
    if rng.random() < 0.5:
        body["chat_template_kwargs"] = {"enable_thinking": False}
    r = rng.random()
    if r < 0.15:
        body |= {"tools": TOOLS, "tool_choice": rng.choice(["auto", "required", {
            "type": "function", "function": {"name": "get_weather"}}])}
    elif r < 0.25:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "m", "schema": SCHEMA}}
    elif r < 0.3:
        body["response_format"] = {"type": "json_object"}
    if rng.random() < 0.15:
        body["n"] = 2
    if rng.random() < 0.15:
        body |= {"logprobs": True, "top_logprobs": 2}
    if rng.random() < 0.15:
        body["stop"] = ["\n\n", "e"]
    if rng.random() < 0.1:
        body["reasoning"] = {"max_tokens": rng.randint(0, 8)}
    return body


def _completion_body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": rng.randint(1, 48),
                            "prompt": rng.choice(["The capital of France is", "Once upon a time", [9707, 11, 1879]]),
                            "temperature": rng.choice([0, 1.0])}
    if rng.random() < 0.2:
        body["n"] = 2
    if rng.random() < 0.2:
        body["logprobs"] = 2
    if rng.random() < 0.2:
        body["stop"] = [" the", "."]
    if rng.random() < 0.1:
        body["echo"] = True
    return body


class Soak:
    def __init__(self, args: argparse.Namespace, base: str, keys: dict[str, str]) -> None:
        self.args = args
        self.base = base
        self.keys = keys
        self.results: list[Result] = []

    async def one(self, client: httpx.AsyncClient, i: int) -> None:
        rng = random.Random(self.args.seed * 100003 + i)
        roll = rng.random()
        if roll < 0.10:
            await self._bad(client, rng)
        elif roll < 0.20:
            await self._abandon(client, rng)
        elif roll < 0.24:
            await self._call(client, rng, "poor")
        elif roll < 0.28:
            await self._call(client, rng, "limited")
        else:
            await self._call(client, rng, "main")

    async def _call(self, client: httpx.AsyncClient, rng: random.Random, key: str) -> None:
        chat = rng.random() < 0.65
        body = _chat_body(rng) if chat else _completion_body(rng)
        stream = rng.random() < 0.5
        path = "/v1/chat/completions" if chat else "/v1/completions"
        kind = ("chat" if chat else "completions") + ("_stream" if stream else "")
        res = Result(kind, key)
        self.results.append(res)
        t0 = time.monotonic()
        headers = {"Authorization": f"Bearer {self.keys[key]}"}
        try:
            async with asyncio.timeout(self.args.hang_s):
                if stream:
                    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
                    async with client.stream("POST", path, json=body, headers=headers) as r:
                        await self._read_stream(r, res)
                else:
                    r = await client.post(path, json=body, headers=headers)
                    self._read_whole(r, res)
        except TimeoutError:
            res.hang = True
        res.seconds = time.monotonic() - t0

    def _headers(self, r: httpx.Response, res: Result) -> None:
        res.status = r.status_code
        res.gen_id = r.headers.get("x-generation-id")
        res.currency = r.headers.get("x-cost-currency")

    def _read_whole(self, r: httpx.Response, res: Result) -> None:
        self._headers(r, res)
        try:
            body = r.json()
        except ValueError:
            res.error_shape_ok = False
            return
        if r.status_code >= 400:
            res.error_shape_ok = _error_shaped(body)
        else:
            res.body_id, res.usage = body.get("id"), body.get("usage")

    async def _read_stream(self, r: httpx.Response, res: Result, stop_after: int | None = None) -> None:
        self._headers(r, res)
        if r.status_code >= 400:
            res.error_shape_ok = _error_shaped(json.loads(await r.aread()))
            return
        last: list[str] = []
        seen = 0
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                last.append("done")
                continue
            event = json.loads(data)
            if "error" in event:
                last.append("error")
                res.notes.append(str(event["error"].get("code")))
                continue
            res.body_id = res.body_id or event.get("id")
            if event.get("id") != res.body_id:
                res.notes.append("chunk ids differ")
            if event.get("usage"):
                res.usage = event["usage"]
            seen += 1
            if stop_after is not None and seen >= stop_after:
                res.abandoned = True
                return
        res.terminal = "+".join(last[-2:]) if last else "none"

    async def _bad(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        body, route, ok = rng.choice(BAD)
        res = Result("bad_" + route, "main")
        self.results.append(res)
        headers = {"Authorization": f"Bearer {self.keys['main']}", "Content-Type": "application/json"}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.args.hang_s):
                r = await client.post(f"/v1/{'chat/completions' if route == 'chat' else 'completions'}",
                                      content=content, headers=headers)
            res.status = r.status_code
            res.error_shape_ok = r.status_code in ok and _error_shaped(r.json())
            if not res.error_shape_ok:
                res.notes.append(f"{r.status_code}: {r.text[:200]}")
        except TimeoutError:
            res.hang = True
        res.seconds = time.monotonic() - t0

    async def _abandon(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        chat = rng.random() < 0.5
        stream = rng.random() < 0.5
        path = "/v1/chat/completions" if chat else "/v1/completions"
        body = {"model": MODEL, "max_tokens": 3000, "logit_bias": NO_EOS, "stream": stream,
                **({"messages": [{"role": "user", "content": "Go on."}]} if chat else {"prompt": "Go on"})}
        res = Result(("abandon_chat" if chat else "abandon_completions") + ("_stream" if stream else ""), "abandon",
                     abandoned=True)
        self.results.append(res)
        headers = {"Authorization": f"Bearer {self.keys['abandon']}"}
        t0 = time.monotonic()
        try:
            if stream:
                async with client.stream("POST", path, json=body, headers=headers) as r:
                    await self._read_stream(r, res, stop_after=rng.randint(1, 6))
            else:  # the client gives up waiting: its timeout closes the connection
                await client.post(path, json=body, headers=headers, timeout=rng.uniform(0.5, 2.0))
                res.abandoned = False
                res.notes.append("a 3000-token answer arrived before the client gave up")
        except httpx.TimeoutException:
            pass
        res.seconds = time.monotonic() - t0


def _make_keys(env: dict[str, str], db_url: str) -> dict[str, str]:
    specs = {"main": ["--credit", "1000"], "abandon": ["--credit", "1000"], "poor": ["--credit", "0.000001"],
             "limited": ["--credit", "1000", "--rpm", "5"]}
    keys = {}
    for name, extra in specs.items():
        out = subprocess.run([sys.executable, "-m", "qwen3_api.cli", "keys", "create", "--name", name, *extra,
                              "--database-url", db_url], capture_output=True, text=True, env=env, timeout=120)
        if out.returncode != 0:
            raise SystemExit(f"keys create failed: {out.stderr}")
        keys[name] = out.stdout.strip().splitlines()[-1]
    return keys


def _start(args: argparse.Namespace, model: Path, db_url: str, env: dict[str, str], log_path: Path
           ) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", str(model), "--port", str(port),
           "--database-url", db_url, "--kv-cache-memory", "0.05", "--max-model-len", "4096", "--max-n", "4",
           "--shutdown-timeout", str(args.shutdown_timeout), "--log-level", "warning", "--access-log"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log_path.read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"server not healthy:\n{log_path.read_text()}")
        time.sleep(0.3)


async def _run_load(soak: Soak) -> float:
    limits = httpx.Limits(max_connections=soak.args.concurrency * 2, max_keepalive_connections=soak.args.concurrency)
    async with httpx.AsyncClient(base_url=soak.base, timeout=soak.args.hang_s, limits=limits) as client:
        sem = asyncio.Semaphore(soak.args.concurrency)

        async def guarded(i: int) -> None:
            async with sem:
                await soak.one(client, i)

        t0 = time.monotonic()
        await asyncio.gather(*(guarded(i) for i in range(soak.args.requests)))
        return time.monotonic() - t0


async def _sigterm_burst(soak: Soak, proc: subprocess.Popen[bytes], n: int) -> list[Result]:
    results = [Result("sigterm_stream", "main") for _ in range(n)]
    started = asyncio.Event()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Talk."}], "max_tokens": 3000,
            "logit_bias": NO_EOS, "stream": True}

    async def one(client: httpx.AsyncClient, res: Result) -> None:
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {soak.keys['main']}"}) as r:
                started.set()
                await soak._read_stream(r, res)
        except httpx.HTTPError as exc:
            res.notes.append(repr(exc))

    async with httpx.AsyncClient(base_url=soak.base, timeout=soak.args.hang_s) as client:
        tasks = [asyncio.create_task(one(client, r)) for r in results]
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), soak.args.shutdown_timeout + 60)
    return results


def _ledger(db_url: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    from sqlalchemy import select

    from qwen3_api.platform.db import Database
    from qwen3_api.platform.keys import KeyStore
    from qwen3_api.platform.tables import generations

    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            rows = {r["id"]: dict(r) for r in conn.execute(select(generations)).mappings()}
        keys = {k.name: k for k in KeyStore(db).list()}
    finally:
        db.dispose()
    return rows, keys


def access_lines(log_text: str, label: str) -> list[str]:
    """The access log's lines of the key with this label: every request of it that reached authentication."""
    return [line for line in log_text.splitlines() if "qwen3_api.access" in line and f"key={label} " in line]


def check(results: list[Result], burst: list[Result], rows: dict[str, dict[str, Any]], keys: dict[str, Any],
          health: dict[str, Any], exit_code: int | None, log_text: str) -> list[tuple[str, bool, str]]:
    """The invariants, each (name, held, detail)."""
    from qwen3_api.platform.catalog import Catalog
    from qwen3_api.platform.pricing import Usage, price

    entry = Catalog.load().get(MODEL)
    out: list[tuple[str, bool, str]] = []
    five = [r for r in results + burst if r.status is not None and r.status >= 500]
    out.append(("no 5xx", not five, f"{len(five)} ({Counter(r.kind for r in five)})"))
    hangs = [r for r in results if r.hang]
    out.append(("no hang", not hangs, f"{len(hangs)}"))
    shaped = [r for r in results if not r.error_shape_ok]
    out.append(("4xx OpenAI-shaped, bad input refused", not shaped, "; ".join(n for r in shaped for n in r.notes)[:300]
                or "0"))
    admitted = [r for r in results if r.status == 200 and not r.abandoned]
    bad_ids = [r for r in admitted if not r.gen_id or r.gen_id != r.body_id or not r.currency]
    out.append(("X-Generation-Id == body id, X-Cost-Currency", not bad_ids, f"{len(bad_ids)} of {len(admitted)}"))
    streams_ok = [r for r in admitted if "stream" in r.kind and r.terminal != "done"]
    out.append(("streams end with [DONE]", not streams_ok, f"{len(streams_ok)}"))
    kv = health.get("running", 1) == 0 and health.get("waiting", 1) == 0 and health.get("kv_cache_usage", 1) == 0
    out.append(("KV freed after the load", kv, json.dumps({k: health.get(k) for k in
                                                            ("running", "waiting", "kv_cache_usage")})))
    missing = [r for r in admitted if r.gen_id not in rows]
    out.append(("one ledger row per admitted request", not missing, f"{len(missing)} missing"))
    mismatched = []
    for row in rows.values():
        if row["cost"] != price(entry, Usage(row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"])) \
                and not (row["status"] != "completed" and row["completion_tokens"] == 0 and row["cost"] == 0):
            mismatched.append(row["id"])
    for r in admitted:
        row = rows.get(r.gen_id or "")
        if row is None or r.usage is None:
            continue
        if float(row["cost"]) != r.usage.get("cost") or row["completion_tokens"] != r.usage["completion_tokens"]:
            mismatched.append(r.gen_id)
    out.append(("ledger cost == catalog price == usage.cost (exact)", not mismatched, f"{len(mismatched)}"))
    by_key: dict[str, list[dict[str, Any]]] = {}
    label_of = {k.key_hash: name for name, k in keys.items()}
    for row in rows.values():
        by_key.setdefault(label_of.get(row["key_hash"], "?"), []).append(row)
    # Each abandoned request the server saw (an access-log line: it got as far as authentication) either settled
    # as a cancelled row or was left before its admission finished (a 499 with no outcome: nothing ran, nothing
    # held); one given up before the server read it left no trace at all. An abandoned stream was admitted (its
    # headers came back), so its own row must be there.
    abandon_rows = by_key.get("abandon", [])
    abandoned = [r for r in results if r.abandoned]
    not_cancelled = [row["id"] for row in abandon_rows if row["status"] != "cancelled"]
    lost = [r for r in abandoned if "stream" in r.kind and r.gen_id not in rows]
    seen = access_lines(log_text, keys["abandon"].label) if "abandon" in keys else []
    settled_lines = [line for line in seen if " outcome=cancelled " in line]
    early = [line for line in seen if " status=499 " in line and " outcome=- " in line]
    exact = len(abandon_rows) == len(settled_lines) and len(settled_lines) + len(early) == len(seen)
    out.append(("abandoned requests settled cancelled, on every route",
                not not_cancelled and not lost and exact and len(seen) <= len(abandoned)
                and {r.kind for r in abandoned} >= {"abandon_chat", "abandon_completions"},
                f"{len(abandoned)} abandoned ({dict(Counter(r.kind for r in abandoned))}); the server saw "
                f"{len(seen)}: {len(abandon_rows)} cancelled rows, {len(early)} left before admission; "
                f"{len(not_cancelled)} rows not cancelled, {len(lost)} streams without a row"))
    spent_ok = all(k.spent == sum((row["cost"] for row in by_key.get(name, [])), Decimal(0))
                   for name, k in keys.items())
    out.append(("each key's spent == sum of its ledger rows", spent_ok,
                ", ".join(f"{n}: {k.spent}" for n, k in keys.items())))
    never_negative = all(k.credit is None or k.credit - k.spent - k.reserved >= 0 for k in keys.values())
    out.append(("no credit below zero", never_negative, ""))
    stranded = {n: k.reserved for n, k in keys.items() if k.reserved != 0}
    out.append(("nothing stranded in reserved after SIGTERM", not stranded, json.dumps(
        {n: str(v) for n, v in stranded.items()}) if stranded else "0"))
    drained = [r for r in burst if r.terminal not in ("done", "error+done")]
    settled = [r for r in burst if r.gen_id not in rows]
    out.append(("SIGTERM: every stream ended ([DONE]) and settled, exit 0",
                not drained and not settled and exit_code == 0,
                f"{len(burst)} streams, ends {Counter(r.terminal for r in burst)}, {len(settled)} unsettled, "
                f"exit {exit_code}"))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--tokenizer", type=Path, default=Path(os.environ.get(
        "QWEN3_TOKENIZER_DIR", REPO.parent / "shared" / "qwen3-tokenizer")))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hang-s", type=float, default=120.0, help="a request unanswered this long is a hang")
    p.add_argument("--shutdown-timeout", type=float, default=3.0)
    p.add_argument("--burst", type=int, default=8, help="long streams in flight at the SIGTERM")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args()

    from qwen3_api.demo.tiny import make_tiny_model

    work = Path(tempfile.mkdtemp(prefix="qwen3-soak-"))
    model = make_tiny_model(work / "model", tokenizer_dir=args.tokenizer, seed=7)
    schema = None
    if args.db == "sqlite":
        db_url = f"sqlite:///{work / 'ledger.db'}"
    else:
        import psycopg

        schema = f"soak_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        db_url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        keys = _make_keys(env, db_url)
        log_path = work / "server.log"
        proc, base = _start(args, model, db_url, env, log_path)
        soak = Soak(args, base, keys)
        try:
            elapsed = asyncio.run(_run_load(soak))
            deadline = time.monotonic() + 20
            while True:  # abandoned requests are aborted at the engine's next step
                health = httpx.get(base + "/health", timeout=5).json()
                if (health["running"], health["waiting"], health["kv_cache_usage"]) == (0, 0, 0) \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            burst = asyncio.run(_sigterm_burst(soak, proc, args.burst))
            exit_code = proc.wait(timeout=args.shutdown_timeout + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        rows, key_rows = _ledger(db_url)
        verdicts = check(soak.results, burst, rows, key_rows, health, exit_code, log_path.read_text())
    finally:
        if schema is not None:
            with psycopg.connect(args.pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    statuses = Counter(r.status for r in soak.results)
    kinds = Counter(r.kind for r in soak.results)
    print(f"soak: {args.requests} requests at concurrency {args.concurrency} on {args.db}, {elapsed:.1f} s "
          f"({args.requests / elapsed:.1f} req/s); statuses {dict(sorted(statuses.items(), key=str))}")
    print("kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print(f"ledger rows: {len(rows)} ({dict(Counter(r['status'] for r in rows.values()))})")
    print("| invariant | held | detail |\n|---|---|---|")
    for name, held, detail in verdicts:
        print(f"| {name} | {'yes' if held else 'NO'} | {detail} |")
    if args.json_out:
        args.json_out.write_text(json.dumps({"verdicts": verdicts, "statuses": {str(k): v for k, v in statuses.items()},
                                             "kinds": kinds, "rows": len(rows), "seconds": elapsed}, indent=2))
    failed = [name for name, held, _ in verdicts if not held]
    if failed:
        print(f"FAILED: {failed}; server log: {log_path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

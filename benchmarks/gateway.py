"""What API keys, rate limits and billing add per request, against the same server with --no-auth.

Two measurements, both side by side with the --no-auth reference in the same run:

A. The gateway calls alone, in-process: authenticate → authorize_model → admit (rpm/tpm limits + credit
   reservation) → settle (ledger row + spend), versus NoAuthGateway (which still prices and writes the
   ledger row). This is the platform's own cost, free of HTTP and model noise.
B. End to end over HTTP: `qwen3-api serve` (tiny random demo model, CPU, max_tokens=1) started twice, once
   with a key (credit, rpm, tpm) and once with --no-auth; latency seen by an httpx client.

Each at 1 and 32 concurrent clients, on SQLite and (when reachable) PostgreSQL. Target: <= 2 ms p50 added.

    python benchmarks/gateway.py [--requests 400] [--http-requests 300] [--skip-http] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import httpx

from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway, NoAuthGateway
from qwen3_api.platform.keys import KeyStore
from qwen3_api.platform.pricing import Usage

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MODEL = "qwen/qwen3-30b-a3b"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def drive(one: Callable[[int], Awaitable[None]], n: int, clients: int) -> list[float]:
    """Run ``n`` calls of ``one`` from ``clients`` concurrent workers; per-call latency in ms."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*[worker() for _ in range(clients)])
    return latencies


class Schema:
    """A database URL to benchmark on: a temporary SQLite file, or a throwaway PostgreSQL schema."""

    def __init__(self, kind: str, tmp: Path, pg_url: str) -> None:
        self.kind, self.pg_url, self.schema = kind, pg_url, None
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        else:
            import psycopg

            self.schema = f"qwen3_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
                c.execute(f'CREATE SCHEMA "{self.schema}"')
            self.url = f"{pg_url}?options=-csearch_path%3D{self.schema}"

    def drop(self) -> None:
        if self.schema:
            import psycopg

            with psycopg.connect(self.pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
                c.execute(f'DROP SCHEMA "{self.schema}" CASCADE')


def bench_calls(url: str, clients: int, n: int) -> tuple[list[float], list[float]]:
    """Part A: per-request gateway time, no-auth vs keys, on one database."""
    entry = Catalog.load().get(MODEL)
    db = Database(url)
    db.upgrade()
    key, _ = KeyStore(db).create("bench", credit=Decimal(10**6), rpm=10**7, tpm=10**9)
    full, anon = Gateway(db), NoAuthGateway(db)

    def request(gw: Gateway, tag: str) -> Callable[[int], Awaitable[None]]:
        async def one(i: int) -> None:
            p = await gw.authenticate(f"Bearer {key}")
            gw.authorize_model(p, MODEL)
            adm = await gw.admit(p, entry, prompt_tokens=100, max_tokens=100, generation_id=f"{tag}-{clients}-{i}")
            await gw.settle(adm, Usage(100, 50), status="completed", streamed=True, ttft_s=0.01, duration_s=0.02)
        return one

    async def run() -> tuple[list[float], list[float]]:
        for gw, tag in ((anon, "warm-a"), (full, "warm-f")):
            await drive(request(gw, tag), 50, clients)
        # Interleave rounds so drift on a shared machine hits both sides alike.
        a_all: list[float] = []
        f_all: list[float] = []
        for r in range(4):
            a_all += await drive(request(anon, f"a{r}"), n // 4, clients)
            f_all += await drive(request(full, f"f{r}"), n // 4, clients)
        return a_all, f_all

    try:
        return asyncio.run(run())
    finally:
        db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, url: str, no_auth: bool, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", str(model), "--port", str(port),
           "--database-url", url, "--kv-cache-memory", "0.02", "--log-level", "warning", "--device", "cpu"]
    if no_auth:
        cmd.append("--no-auth")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_http(base: str, key: str | None, clients: int, n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there, how are you?"}],
            "max_tokens": 1, "temperature": 0}

    async def run() -> list[float]:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60,
                                     limits=httpx.Limits(max_connections=clients)) as c:
            async def one(_: int) -> None:
                r = await c.post("/v1/chat/completions", json=body)
                r.raise_for_status()

            await drive(one, 20, clients)
            return await drive(one, n, clients)

    return asyncio.run(run())


def row(db: str, clients: int, ref: list[float], ours: list[float]) -> str:
    r50, r99, o50, o99 = pct(ref, .5), pct(ref, .99), pct(ours, .5), pct(ours, .99)
    return (f"| {db:10} | {clients:7} | {r50:8.2f} | {r99:8.2f} | {o50:8.2f} | {o99:8.2f} | {o50 - r50:+9.2f} | "
            f"{o99 - r99:+9.2f} | {o50 / r50:5.2f} |")


HEADER = ("| database   | clients | no-auth p50 | no-auth p99 | keys p50 | keys p99 | added p50 | added p99 | ratio |\n"
          "|------------|---------|-------------|-------------|----------|----------|-----------|-----------|-------|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400, help="gateway calls per configuration (part A)")
    ap.add_argument("--http-requests", type=int, default=300, help="HTTP requests per configuration (part B)")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--postgres", default=os.environ.get("QWEN3_API_TEST_POSTGRES", PG_DEFAULT))
    args = ap.parse_args()
    kinds = ["sqlite"]
    try:
        import psycopg

        with psycopg.connect(args.postgres.replace("postgresql+psycopg", "postgresql"), connect_timeout=2):
            kinds.append("postgresql")
    except Exception as exc:  # noqa: BLE001
        print(f"(PostgreSQL not reachable at {args.postgres}: {exc}; SQLite only)")
    tmp = Path(tempfile.mkdtemp(prefix="qwen3-gateway-bench-"))

    print(f"\nA. gateway calls per request, in-process (ms; {args.requests} requests per cell)\n")
    print(HEADER)
    for kind in kinds:
        for clients in (1, 32):
            schema = Schema(kind, tmp, args.postgres)
            try:
                anon, full = bench_calls(schema.url, clients, args.requests)
            finally:
                schema.drop()
            print(row(kind, clients, anon, full), flush=True)

    if args.skip_http:
        return 0
    from qwen3_api.demo.tiny import ensure_demo_model

    model = ensure_demo_model()
    print(f"\nB. HTTP end to end, `qwen3-api serve` with the tiny demo model on CPU, max_tokens=1 "
          f"(ms; {args.http_requests} requests per cell)\n")
    print(HEADER)
    for kind in kinds:
        schema = Schema(kind, tmp, args.postgres)
        try:
            db = Database(schema.url)
            db.upgrade()
            key, _ = KeyStore(db).create("bench", credit=Decimal(10**6), rpm=10**7, tpm=10**9)
            db.dispose()
            # Both servers up at once, requests alternating between them in rounds: drift on a shared
            # machine hits both sides alike.
            servers = [start_server(model, schema.url, no_auth, tmp / f"server-{kind}-{no_auth}.log")
                       for no_auth in (True, False)]
            try:
                for clients in (1, 32):
                    ref: list[float] = []
                    ours: list[float] = []
                    for _ in range(4):
                        ref += bench_http(servers[0][1], None, clients, args.http_requests // 4)
                        ours += bench_http(servers[1][1], key, clients, args.http_requests // 4)
                    print(row(kind, clients, ref, ours), flush=True)
            finally:
                for proc, _ in servers:
                    stop_server(proc)
        finally:
            schema.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

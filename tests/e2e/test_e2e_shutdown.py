"""SIGTERM drains, slow clients time out: against a real `qwen3-api serve` process with keys and credits.

One server for the whole file (it is stopped by the test itself): first the read deadlines (slowloris), then
eight long streams and two whole requests in flight when SIGTERM comes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.platform.db import Database
from qwen3_api.platform.keys import KeyStore
from tests.e2e.helpers import MODEL, start_server, stop_server

NO_EOS = {"151645": -100, "151643": -100}  # keep the random model talking until the server stops it
SHUTDOWN_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("shutdown")
    model = make_tiny_model(root / "model", tokenizer_dir=qwen3_tokenizer_dir, seed=5)
    db_url = f"sqlite:///{root / 'ledger.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    made = subprocess.run([sys.executable, "-m", "qwen3_api.cli", "keys", "create", "--name", "drain",
                           "--credit", "50", "--database-url", db_url], capture_output=True, text=True, env=env,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    log_path = root / "server.log"
    proc, base = start_server(["--model", str(model), "--database-url", db_url, "--kv-cache-memory", "0.02",
                               "--max-model-len", "4096", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
                               "--request-header-timeout", "1", "--request-body-timeout", "1",
                               "--max-header-bytes", "8192"], log_path, env)
    yield {"proc": proc, "base": base, "port": urlsplit(base).port, "key": made.stdout.strip(), "db_url": db_url,
           "log": log_path}
    stop_server(proc, signal.SIGKILL)  # the test stops it with SIGTERM; this is for a test that failed first


def _raw(port: int, data: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send ``data`` and read until the server closes; (what it answered, seconds it took)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s + 5) as s:
        t0 = time.monotonic()
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got, time.monotonic() - t0


def test_slow_clients_get_408_and_big_heads_431(setup: dict[str, Any]) -> None:
    port = setup["port"]
    head, took = _raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl", 5)
    assert head.startswith(b"HTTP/1.1 408 ") and b"request head" in head and 0.8 < took < 3
    body, took = _raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{\"model\": ", 5)
    assert body.startswith(b"HTTP/1.1 408 ") and b"request body" in body and 0.8 < took < 3
    big, _ = _raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 5)
    assert big.startswith(b"HTTP/1.1 431 ")
    # Two hundred connections that never finish their headers are all gone within the deadline, not held.
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    for s in socks:
        s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
    time.sleep(2.5)
    closed = 0
    for s in socks:
        s.settimeout(0.5)
        try:
            closed += s.recv(4096).startswith(b"HTTP/1.1 408")
        except OSError:
            pass
        s.close()
    assert closed == 200
    assert httpx.get(setup["base"] + "/health", timeout=5).status_code == 200  # honest clients still served


def _stream(base: str, key: str, out: dict[str, Any]) -> None:
    events: list[Any] = []
    out["events"] = events
    try:
        with httpx.stream("POST", base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": MODEL, "messages": [{"role": "user", "content": "Talk."}],
                                "max_tokens": 3500, "stream": True, "logit_bias": NO_EOS}, timeout=60) as r:
            out["id"] = r.headers["x-generation-id"]
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    except httpx.HTTPError as exc:
        out["error"] = repr(exc)
    out["ended"] = time.monotonic()


def _whole(base: str, key: str, out: dict[str, Any]) -> None:
    r = httpx.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 12,
                         "logit_bias": NO_EOS})
    out["status"], out["body"] = r.status_code, r.json()


def _in_engine(base: str) -> int:
    """Requests running or waiting in the engine, read from /metrics."""
    text = httpx.get(base + "/metrics", timeout=5).text
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if line.startswith(("qwen3_api_num_requests_running", "qwen3_api_num_requests_waiting")))


def test_sigterm_drains_ends_and_settles_everything(setup: dict[str, Any]) -> None:
    base, key, proc = setup["base"], setup["key"], setup["proc"]
    streams = [{} for _ in range(8)]
    threads = [threading.Thread(target=_stream, args=(base, key, s)) for s in streams]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while not all(len(s.get("events", [])) >= 3 for s in streams):  # every stream is generating
        assert time.monotonic() < deadline, setup["log"].read_text()
        time.sleep(0.05)
    wholes = [{} for _ in range(2)]
    extra = [threading.Thread(target=_whole, args=(base, key, w)) for w in wholes]
    for t in extra:
        t.start()
    # SIGTERM only once both short requests are in the engine (or done): a busy machine can take longer than any
    # fixed sleep to connect them, and a request that arrives after SIGTERM is refused, as it should be.
    while _in_engine(base) < 10 and not all("status" in w for w in wholes):
        assert time.monotonic() < deadline, setup["log"].read_text()
        time.sleep(0.05)
    sigterm_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):  # no new connections once draining
        httpx.get(base + "/health", timeout=2)
    for t in threads + extra:
        t.join(timeout=SHUTDOWN_TIMEOUT + 30)
    assert proc.wait(timeout=SHUTDOWN_TIMEOUT + 30) == 0, setup["log"].read_text()
    log = setup["log"].read_text()
    assert "Traceback" not in log, log

    # The two short requests in flight finished normally within the drain.
    assert [w["status"] for w in wholes] == [200, 200] and all(w["body"]["usage"]["completion_tokens"] == 12
                                                                for w in wholes)
    # The long streams ran until the deadline, then ended with one error event and [DONE].
    for s in streams:
        assert "error" not in s, s.get("error")
        events = s["events"]
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "server_shutting_down", events[-3:]
        assert SHUTDOWN_TIMEOUT - 0.5 <= s["ended"] - sigterm_at <= SHUTDOWN_TIMEOUT + 8
    # Every one settled: one ledger row each, holds released, leases returned only after that.
    db = Database(setup["db_url"])
    try:
        with db.engine.connect() as conn:
            from sqlalchemy import select

            from qwen3_api.platform.tables import generations

            rows = {r["id"]: dict(r) for r in conn.execute(select(generations)).mappings()}
        for s in streams:
            row = rows[s["id"]]
            seen = sum(1 for e in s["events"] if isinstance(e, dict) and e.get("choices"))
            assert row["status"] == "error" and row["streamed"] and row["completion_tokens"] >= seen - 1
            assert row["cost"] > 0
        assert sum(r["status"] == "completed" for r in rows.values()) == 2
        [record] = KeyStore(db).list()
        assert record.reserved == 0
        assert record.spent == sum((r["cost"] for r in rows.values()), Decimal(0))
    finally:
        db.dispose()

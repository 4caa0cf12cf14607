"""An operator's first minutes against the real command: create a key, serve the demo with --access-log, call it.

Its own server (not the session's --no-auth one): a key, the demo model and the access log are the point here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.helpers import start_server, stop_server, wait_healthy


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qwen3_api.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=60)


def test_key_then_demo_server_with_access_log(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "QWEN3_API_HOME": str(tmp_path / "home"),
           "QWEN3_API_CACHE": str(tmp_path / "cache")}
    env.pop("QWEN3_API_DATABASE_URL", None)
    made = _cli(env, "keys", "create", "--name", "ops")
    key = made.stdout.strip()
    assert made.returncode == 0 and re.fullmatch(r"sk-[\w-]{40,}", key), made  # KEY=$(...) gets the key alone
    again = _cli(env, "keys", "create", "--name", "ops")
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr

    log_path = tmp_path / "server.log"
    proc, base = start_server(["--access-log", "--kv-cache-memory", "0.01", "--max-model-len", "512"], log_path, env,
                              wait=False)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        health = wait_healthy(proc, base, log_path)
        assert (health.json()["demo"], health.json()["weights"]) == (True, "random")
        [card] = httpx.get(base + "/v1/models", headers=auth).json()["data"]
        assert card["id"] == "qwen/qwen3-30b-a3b" and "demo, random weights" in card["name"]
        body = {"model": card["id"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        plain = httpx.post(base + "/v1/chat/completions", headers=auth, json=body, timeout=60).json()
        with httpx.stream("POST", base + "/v1/chat/completions", headers=auth, timeout=60,
                          json={**body, "stream": True}) as r:
            streamed_text = r.read().decode()
    finally:
        stop_server(proc)

    text = log_path.read_text()
    assert "RANDOM WEIGHTS" in text and "alembic" not in text  # the banner, and no migration chatter at INFO
    assert key not in text and key[3:] not in text
    chat_lines = [ln for ln in text.splitlines() if "qwen3_api.access" in ln and "/v1/chat/completions" in ln]
    assert len(chat_lines) == 2, text
    label = f"key=sk-…{key[-4:]}"
    first, second = chat_lines
    assert f"id={plain['id']} {label} method=POST path=/v1/chat/completions status=200" in first
    assert f"completion_tokens={plain['usage']['completion_tokens']}" in first
    stream_id = re.search(r"id=(chatcmpl-\w+)", second).group(1)
    assert stream_id in streamed_text and label in second and "outcome=completed" in second
    assert re.search(r"completion_tokens=[1-5] ", second) and re.search(r"duration_ms=\d+", second)

"""A real server with keys (not the session's --no-auth one), for the dialect modules: one process per module.

Keys come from the admin API: ``rich`` (credit enough), ``broke`` (credit 0: every request is a 402) and ``slow``
(one request a minute: the second is a 429). ``ledger(key, id)`` reads a generation's ledger row as its key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from qwen3_api.demo.tiny import make_tiny_model
from tests.e2e.conftest import _free_port

ADMIN_KEY = "admin-e2e-dialects"


@dataclass
class KeyedServer:
    base_url: str
    model_dir: Path
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def ledger(self, key: str, generation_id: str) -> dict[str, Any]:
        r = httpx.get(self.v1 + "/generation", params={"id": generation_id}, timeout=30,
                      headers={"Authorization": f"Bearer {self.keys[key]}"})
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def think_bias(self) -> dict[str, float]:
        """Random weights rarely open a thought: a logit bias on ``<think>`` makes it certain (the chat layer
        lets the thought open once, and a thinking budget closes it)."""
        from tokenizers import Tokenizer

        tid = Tokenizer.from_file(str(self.model_dir / "tokenizer.json")).token_to_id("<think>")
        return {str(tid): 100.0}


@contextmanager
def keyed_server(root: Path, tokenizer_dir: Path) -> Iterator[KeyedServer]:
    model_dir = make_tiny_model(root / "model", tokenizer_dir=tokenizer_dir, max_position_embeddings=2048, seed=1)
    port = _free_port()
    log_path = root / "server.log"
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", str(model_dir), "--port", str(port),
           "--database-url", f"sqlite:///{root / 'ledger.db'}", "--kv-cache-memory", "0.01",
           "--max-model-len", "2048", "--keepalive-s", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "QWEN3_API_ADMIN_KEY": ADMIN_KEY}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = KeyedServer(f"http://127.0.0.1:{port}", model_dir, log_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after 120 s:\n{log_path.read_text()}")
            time.sleep(0.3)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for name, limits in (("rich", {"credit": "100"}), ("broke", {"credit": "0"}), ("slow", {"rpm": 1})):
            r = httpx.post(server.base_url + "/admin/keys", headers=admin, json={"name": name, **limits}, timeout=30)
            assert r.status_code == 201, r.text
            server.keys[name] = r.json()["key"]
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

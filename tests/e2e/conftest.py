"""The real server as a subprocess (one per test session) over a tiny random checkpoint with the real tokenizer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qwen3_api.demo.tiny import make_tiny_model

NATIVE_CONTEXT = 2048
SERVED_CONTEXT = 4096  # above native: the server must turn YaRN on and report 4096


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:PORT
    log_path: Path
    model_dir: Path

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("e2e")
    model_dir = make_tiny_model(root / "model", tokenizer_dir=qwen3_tokenizer_dir,
                                max_position_embeddings=NATIVE_CONTEXT, seed=1)
    port = _free_port()
    log_path = root / "server.log"
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", str(model_dir), "--port", str(port),
           "--no-auth", "--database-url", f"sqlite:///{root / 'ledger.db'}", "--kv-cache-memory", "0.01",
           "--max-model-len", str(SERVED_CONTEXT), "--max-n", "4", "--max-body-bytes", "200000",
           "--keepalive-s", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after 120 s:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield Server(base, log_path, model_dir)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def client(server: Server):  # noqa: ANN201 - openai.OpenAI
    from openai import OpenAI

    return OpenAI(base_url=server.v1, api_key="API_KEY", max_retries=0, timeout=120)

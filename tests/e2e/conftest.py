"""The real server as a subprocess (one per test session) over a tiny random checkpoint with the real tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen3_api.demo.tiny import make_tiny_model
from tests.e2e.helpers import NATIVE_CONTEXT, SERVED_CONTEXT, Server, start_server, stop_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("e2e")
    model_dir = make_tiny_model(root / "model", tokenizer_dir=qwen3_tokenizer_dir,
                                max_position_embeddings=NATIVE_CONTEXT, seed=1)
    log_path = root / "server.log"
    proc, base = start_server(["--model", str(model_dir), "--no-auth", "--database-url",
                               f"sqlite:///{root / 'ledger.db'}", "--kv-cache-memory", "0.01",
                               "--max-model-len", str(SERVED_CONTEXT), "--max-n", "4", "--max-body-bytes", "200000",
                               "--keepalive-s", "1"], log_path)
    try:
        yield Server(base, log_path, model_dir)
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def client(server: Server):  # noqa: ANN201 - openai.OpenAI
    from openai import OpenAI

    return OpenAI(base_url=server.v1, api_key="API_KEY", max_retries=0, timeout=120)

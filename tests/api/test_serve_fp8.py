"""`qwen3-api serve --model <block-FP8 checkpoint> --kv-cache-dtype fp8` on the CPU (issue 16): the official
format loads (dequantized at load), the FP8 KV cache is allocated, requests are answered through the API, and
the model card says the weights are FP8."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from openai import OpenAI

from qwen3_api.api.serve import build_app
from qwen3_api.cli import build_parser
from qwen3_api.demo.tiny_fp8 import make_tiny_fp8_model

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def served(tmp_path_factory: Any, qwen3_tokenizer_dir: Path) -> Iterator[tuple[Any, TestClient, Path]]:
    """The app `serve` builds for a tiny official-format FP8 checkpoint with an FP8 KV cache, started."""
    tmp = tmp_path_factory.mktemp("serve_fp8")
    model = make_tiny_fp8_model(tmp / "fp8", tokenizer_dir=qwen3_tokenizer_dir, layers=2,
                                max_position_embeddings=512)  # fmt: skip
    args = build_parser().parse_args(["serve", "--no-auth", "--port", "0", "--model", str(model),
                                      "--database-url", f"sqlite:///{tmp / 'db.sqlite'}",
                                      "--kv-cache-dtype", "fp8", "--kv-cache-memory", "0.01",
                                      "--max-model-len", "512"])  # fmt: skip
    app = build_app(args)
    with TestClient(app) as client:
        yield app, client, model


def test_serve_an_fp8_checkpoint_with_an_fp8_kv_cache(served: tuple[Any, TestClient, Path]) -> None:
    app, client, _ = served
    runner = app.state.api.engine.engine.runner
    assert runner.kv_caches[0][0].dtype == torch.float8_e4m3fn
    layer = runner.model.model.layers[0]
    # the CPU has no FP8 GEMMs: the projections were dequantized into the model dtype at load
    assert layer.self_attn.qkv_proj.weight.dtype == torch.float32
    [card] = client.get("/v1/models").json()["data"]
    assert card["quantization"] == "fp8" and card["hosting"] == "local"
    r = client.post("/v1/chat/completions", json={
        "model": card["id"], "max_tokens": 5, "temperature": 0, "logprobs": True,
        "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    body = r.json()
    assert r.status_code == 200, body
    assert body["usage"]["completion_tokens"] >= 1
    assert all(t["logprob"] <= 0 for t in body["choices"][0]["logprobs"]["content"])
    # a bad request to the FP8 model is a clear OpenAI-shaped error, not a 500
    bad = client.post("/v1/chat/completions", json={"model": card["id"], "max_tokens": -1,
                                                    "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"


def test_the_gpu_e2e_checks_pass_through_the_openai_sdk(served: tuple[Any, TestClient, Path]) -> None:
    """benchmarks/gpu_serve_e2e.py's checks (thinking, a forced tool call, a JSON schema), which the H200 run
    makes against a real-shape FP8 model, here through the SDK on the tiny one in process."""
    _, client, model = served
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    e2e = importlib.import_module("gpu_serve_e2e")
    sdk = OpenAI(base_url="http://testserver/v1", api_key="none", http_client=client, max_retries=0)
    thinking = e2e.check_thinking(sdk, model)
    assert thinking["ok"] and thinking["reasoning_tokens"] >= 16, thinking
    tools = e2e.check_tools(sdk)
    assert tools["ok"] and tools["finish_reason"] in ("tool_calls", "length"), tools
    schema = e2e.check_json_schema(sdk)
    assert schema["ok"] and schema["finish_reason"] in ("stop", "length"), schema

"""`qwen3-api serve` wiring: the demo model with its loud warning, the engine, the platform, the context in force."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from qwen3_api.api.serve import build_app
from qwen3_api.cli import build_parser
from qwen3_api.demo.tiny import make_tiny_model


def test_serve_without_model_uses_the_demo_and_says_so(tmp_path: Path, qwen3_tokenizer_dir: Path,
                                                        monkeypatch: Any, capsys: Any) -> None:
    demo = make_tiny_model(tmp_path / "demo", tokenizer_dir=qwen3_tokenizer_dir, max_position_embeddings=512)
    monkeypatch.setattr("qwen3_api.demo.tiny.ensure_demo_model", lambda *a, **k: demo)
    args = build_parser().parse_args(["serve", "--no-auth", "--port", "0",
                                      "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}",
                                      "--kv-cache-memory", "0.01", "--max-model-len", "1024", "--max-n", "2"])
    app = build_app(args)
    banner = capsys.readouterr().err
    assert "RANDOM WEIGHTS" in banner and "'qwen/qwen3-30b-a3b'" in banner
    with TestClient(app) as client:
        [card] = client.get("/v1/models").json()["data"]
        # 1024 > the checkpoint's native 512: served with YaRN, reported as the context in force.
        assert card["id"] == "qwen/qwen3-30b-a3b" and card["context_length"] == 1024
        # Same id (the examples work unchanged), but the listing says what it really is.
        assert card["name"].endswith("(demo, random weights)") and "DEMO, RANDOM WEIGHTS" in card["description"]
        assert "30.5B" not in card["description"]
        r = client.post("/v1/chat/completions", json={"model": card["id"], "max_tokens": 3, "n": 2,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and len(r.json()["choices"]) == 2
        assert client.post("/v1/chat/completions", json={"model": card["id"], "n": 3, "messages": [
            {"role": "user", "content": "hi"}]}).json()["error"]["param"] == "n"
        health = client.get("/health").json()
        assert (health["status"], health["model"], health["demo"], health["weights"]) == (
            "ok", "qwen/qwen3-30b-a3b", True, "random")
    engine = app.state.api.engine
    assert not engine.is_running  # the lifespan stopped the engine thread

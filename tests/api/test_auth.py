"""The platform's real Gateway behind the API: 401 / 403 / 429 in OpenAI's shape, usage.cost and the ledger."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qwen3_api.api.app import Settings, create_app
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from tests.api.helpers import MODEL, ScriptedEngine, text_script


@pytest.fixture()
def app_and_keys(tmp_path: Path, qwen3_tokenizer_dir: Path, chat_tok: Any) -> Any:
    db = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    db.upgrade()
    gateway = Gateway(db)
    good, _ = gateway.keys.create("good")
    other, _ = gateway.keys.create("other-models", models=["someone/else"])
    slow, _ = gateway.keys.create("slow", rpm=1)
    engine = ScriptedEngine(text_script(chat_tok, "<think>\nhm\n</think>\n\nHello!<|im_end|>"))
    app = create_app(engine, Catalog.load(), gateway, Settings(model_path=str(qwen3_tokenizer_dir)))
    with TestClient(app) as client:
        yield client, {"good": good, "other": other, "slow": slow}


def _chat(client: TestClient, key: str | None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/chat/completions", headers=headers,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kw})


def test_keys_are_required_and_checked(app_and_keys: Any) -> None:
    client, keys = app_and_keys
    for key in (None, "sk-not-a-real-key"):
        r = _chat(client, key)
        assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/models").status_code == 401
    r = _chat(client, keys["other"])
    assert r.status_code == 403 and r.json()["error"]["type"]


def test_cost_and_ledger_row(app_and_keys: Any) -> None:
    client, keys = app_and_keys
    body = _chat(client, keys["good"]).json()
    usage = body["usage"]
    expected = (Decimal(usage["prompt_tokens"]) * Decimal("0.0012")
                + Decimal(usage["completion_tokens"]) * Decimal("0.00375")) / 1000
    assert Decimal(str(usage["cost"])) == expected
    # The ledger is group-committed off the request path: the row may land a moment after the answer.
    for _ in range(50):
        r = client.get("/v1/generation", params={"id": body["id"]},
                       headers={"Authorization": f"Bearer {keys['good']}"})
        if r.status_code == 200:
            break
        time.sleep(0.05)
    row = r.json()["data"]
    assert row["status"] == "completed" and row["tokens_completion"] == usage["completion_tokens"]
    assert row["tokens_reasoning"] == usage["completion_tokens_details"]["reasoning_tokens"] > 0


def test_rate_limit_headers(app_and_keys: Any) -> None:
    client, keys = app_and_keys
    assert _chat(client, keys["slow"]).status_code == 200
    r = _chat(client, keys["slow"], stream=True)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] and "x-ratelimit-limit" in r.headers

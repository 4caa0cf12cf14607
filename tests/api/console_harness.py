"""One app as `serve` builds it with the console on: the real Gateway over SQLite, a scripted engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qwen3_api.api.app import Settings, create_app
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from tests.api.fakes import ScriptedEngine

ADMIN = "admin-key-for-console-tests"
BASE = "http://testserver"


class Console:
    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    def client(self) -> TestClient:
        return TestClient(self.app, base_url=BASE, raise_server_exceptions=False)

    def new_key(self, **body: Any) -> str:
        r = self.client().post("/admin/keys", json={"name": f"k{time.monotonic_ns()}", **body},
                               headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def sign_in(self, key: str) -> tuple[TestClient, str]:
        c = self.client()
        r = c.post("/console/api/session", json={"key": key})
        assert r.status_code == 201, r.text
        return c, r.json()["data"]["csrf_token"]


@pytest.fixture(name="console")
def console_fixture(tmp_path: Path, qwen3_tokenizer_dir: Path) -> Iterator[Console]:
    tok = ChatTokenizer.from_dir(qwen3_tokenizer_dir)
    answer = tok.encode("<think>\nhm\n</think>\n\nHello<|im_end|>")
    db = Database(f"sqlite:///{tmp_path / 'console.db'}")
    db.upgrade()
    gateway = Gateway(db, admin_key=ADMIN)
    app = create_app(ScriptedEngine(lambda *a: answer), Catalog.load(), gateway,
                     Settings(model_path=str(qwen3_tokenizer_dir), console=True))
    app.state.console_sessions.fail_delay_s = 0.3
    with TestClient(app):  # runs the lifespan once around the test
        yield Console(app, gateway)
    db.dispose()

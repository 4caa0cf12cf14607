"""Fixtures for the API tests: the app around a scripted engine and a recording gateway, over TestClient, and the
console's app over the real Gateway (the classes are in helpers.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from qwen3_api.api.app import Settings, create_app
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from tests.api.helpers import ADMIN, SCHEMA, Console, Harness, RecordingGateway, Script, ScriptedEngine


@pytest.fixture(scope="session")
def chat_tok(qwen3_tokenizer_dir: Path) -> ChatTokenizer:
    return ChatTokenizer.from_dir(qwen3_tokenizer_dir)


@pytest.fixture(scope="session")
def openai_schema() -> Callable[[str], Draft202012Validator]:
    defs = json.loads(SCHEMA.read_text())["$defs"]

    def validator(name: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": defs})

    return validator


@pytest.fixture()
def make_harness(qwen3_tokenizer_dir: Path) -> Iterator[Callable[..., Harness]]:
    clients: list[TestClient] = []

    def make(script: Script, *, settings: Settings | None = None, gateway: RecordingGateway | None = None,
             **engine_kw: Any) -> Harness:
        engine = ScriptedEngine(script, **engine_kw)
        gw = gateway or RecordingGateway()
        settings = settings or Settings()
        settings.model_path = settings.model_path or str(qwen3_tokenizer_dir)
        app = create_app(engine, Catalog.load(), gw, settings)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Harness(client, engine, gw)

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture()
def console(tmp_path: Path, qwen3_tokenizer_dir: Path) -> Iterator[Console]:
    """One app as `serve` builds it with the console on: the real Gateway over SQLite, a scripted engine."""
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

"""Fixtures for the API tests: the app around a scripted engine and a recording gateway, over TestClient."""

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
from tests.api.fakes import RecordingGateway, Script, ScriptedEngine

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openai-chat-schema.json"
MODEL = "qwen/qwen3-30b-a3b"


@pytest.fixture(scope="session")
def chat_tok(qwen3_tokenizer_dir: Path) -> ChatTokenizer:
    return ChatTokenizer.from_dir(qwen3_tokenizer_dir)


@pytest.fixture(scope="session")
def openai_schema() -> Callable[[str], Draft202012Validator]:
    defs = json.loads(SCHEMA.read_text())["$defs"]

    def validator(name: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": defs})

    return validator


class Harness:
    """One app: its client, engine and gateway."""

    def __init__(self, client: TestClient, engine: ScriptedEngine, gateway: RecordingGateway) -> None:
        self.client = client
        self.engine = engine
        self.gateway = gateway

    def chat(self, **body: Any) -> Any:
        body.setdefault("model", MODEL)
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        return self.client.post("/v1/chat/completions", json=body)

    def chat_stream(self, **body: Any) -> list[Any]:
        """The stream's events: dicts for JSON events, the string "[DONE]", ":" for comments."""
        body.setdefault("model", MODEL)
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        body["stream"] = True
        with self.client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = r.read().decode()
        return parse_sse(raw)


def parse_sse(raw: str) -> list[Any]:
    """Split an SSE body into events, checking the framing (every event ends with a blank line)."""
    assert raw.endswith("\n\n"), raw[-50:]
    events: list[Any] = []
    for block in raw.split("\n\n")[:-1]:
        if block.startswith(":"):
            events.append(":")
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


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


def text_script(tok: ChatTokenizer, text: str) -> Script:
    """A script that answers ``text`` (special-token text becomes special tokens) for every choice."""
    ids = tok.encode(text)

    def script(prompt_ids: list[int], params: Any, index: int) -> list[int]:
        return ids

    return script

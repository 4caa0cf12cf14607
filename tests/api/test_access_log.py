"""`serve --access-log`: one line per request, streams logged when they end, never the secret key."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qwen3_api.api.access_log import FIELDS, format_line, note
from qwen3_api.api.app import Settings, create_app
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from tests.api.helpers import MODEL, RecordingGateway, ScriptedEngine, call_and_leave, text_script

ANSWER = "<think>\nhm\n</think>\n\nHello there!<|im_end|>"


def _fields(line: str) -> dict[str, str]:
    """The logfmt line as a dict (the test's values have no spaces)."""
    return dict(part.split("=", 1) for part in line.split(" "))


@pytest.fixture()
def served(tmp_path: Path, qwen3_tokenizer_dir: Path, chat_tok: Any, caplog: pytest.LogCaptureFixture) -> Any:
    db = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    db.upgrade()
    gateway = Gateway(db)
    key, record = gateway.keys.create("alice")
    engine = ScriptedEngine(text_script(chat_tok, ANSWER))
    app = create_app(engine, Catalog.load(), gateway, Settings(model_path=str(qwen3_tokenizer_dir),
                                                              access_log=True, max_body_bytes=4096))
    caplog.set_level(logging.INFO)
    with TestClient(app) as client:
        yield client, key, record, caplog
    db.dispose()


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qwen3_api.access"]


def test_each_request_is_one_line_with_its_id_key_label_status_and_tokens(served: Any) -> None:
    client, key, record, caplog = served
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    plain = client.post("/v1/chat/completions", headers=auth, json=body).json()
    with client.stream("POST", "/v1/chat/completions", headers=auth,
                       json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        chunks = r.read().decode()
    client.post("/v1/chat/completions", json=body)  # no key: 401
    client.post("/v1/chat/completions", headers=auth, content=b"x" * 5000)  # over --max-body-bytes: 413

    lines = _access_lines(caplog)
    assert len(lines) == 4, lines
    first, streamed, unauthenticated, too_big = (_fields(line) for line in lines)
    assert list(first) == list(FIELDS)
    assert first["id"] == plain["id"] and first["key"] == record.label == f"sk-…{key[-4:]}"
    assert (first["method"], first["path"], first["status"], first["outcome"]) == (
        "POST", "/v1/chat/completions", "200", "completed")
    assert int(first["prompt_tokens"]) == plain["usage"]["prompt_tokens"]
    assert int(first["completion_tokens"]) == plain["usage"]["completion_tokens"] > 0
    assert int(first["duration_ms"]) >= 0
    # The stream's line is written when it ended, so it has the settled tokens, not just the 200.
    assert streamed["id"] in chunks and streamed["status"] == "200" and streamed["outcome"] == "completed"
    assert int(streamed["completion_tokens"]) == plain["usage"]["completion_tokens"]
    assert (unauthenticated["status"], unauthenticated["key"], unauthenticated["id"]) == ("401", "-", "-")
    assert too_big["status"] == "413"
    assert key not in caplog.text and key[3:] not in caplog.text  # never the secret, in any log record


def test_off_by_default(tmp_path: Path, qwen3_tokenizer_dir: Path, chat_tok: Any,
                        caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine(text_script(chat_tok, ANSWER))
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    db.upgrade()
    app = create_app(engine, Catalog.load(), Gateway(db), Settings(model_path=str(qwen3_tokenizer_dir)))
    caplog.set_level(logging.INFO)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
    assert _access_lines(caplog) == []
    db.dispose()


def test_note_outside_a_logged_request_does_nothing_and_odd_values_are_quoted() -> None:
    note(id="x")  # no request being logged: must not raise nor leak into a later line
    line = format_line({"path": "/a b", "method": "GET", "key": 'k"="'})
    assert 'path="/a b"' in line and 'key="k\\"=\\""' in line and "id=-" in line


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_is_logged_once_as_cancelled(qwen3_tokenizer_dir: Path, stream: bool,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine(lambda p, params, i: [9707] * 10_000, step_s=0.01)
    app = create_app(engine, Catalog.load(), RecordingGateway(),
                     Settings(model_path=str(qwen3_tokenizer_dir), access_log=True))
    caplog.set_level(logging.INFO)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 3000, "stream": stream}
    asyncio.run(call_and_leave(app, body, leave_after_s=0.3, engine=engine))
    [line] = _access_lines(caplog)
    fields = _fields(line)
    assert fields["outcome"] == "cancelled" and fields["id"] == engine.requests[0][2]
    assert 0 < int(fields["completion_tokens"]) < 3000
    # A stream had sent its 200 before the client left; an unanswered request is the client's 499.
    assert fields["status"] == ("200" if stream else "499")

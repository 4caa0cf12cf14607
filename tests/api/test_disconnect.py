"""A client that leaves mid-request aborts the engine request and is settled once, as cancelled."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from qwen3_api.api.app import Settings, create_app
from qwen3_api.platform.catalog import Catalog
from tests.api.conftest import MODEL
from tests.api.fakes import RecordingGateway, ScriptedEngine


async def _call(app: Any, body: dict[str, Any], leave_after_s: float) -> list[dict[str, Any]]:
    """Drive the ASGI app like a server whose client disconnects ``leave_after_s`` after sending."""
    raw = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    state = {"body_sent": False}

    async def receive() -> dict[str, Any]:
        if not state["body_sent"]:
            state["body_sent"] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(leave_after_s)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json"),
                                                              (b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    await asyncio.wait_for(app(scope, receive, send), timeout=20)
    return sent


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_aborts_and_settles_cancelled(qwen3_tokenizer_dir: Any, stream: bool) -> None:
    engine = ScriptedEngine(lambda p, params, i: [9707] * 10_000, step_s=0.01)
    gateway = RecordingGateway()
    app = create_app(engine, Catalog.load(), gateway, Settings(model_path=str(qwen3_tokenizer_dir)))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 3000, "stream": stream}
    sent = asyncio.run(_call(app, body, leave_after_s=0.3))
    assert len(engine.requests) == 1
    rid = engine.requests[0][2]
    assert engine.aborted == [rid] and not engine.active  # the engine let the request go (KV freed)
    [settled] = gateway.settled
    assert settled["generation_id"] == rid and settled["status"] == "cancelled"
    assert settled["streamed"] is stream
    # Billed for what was generated before the client left: some tokens, far from the 3000 asked for.
    assert 1 <= settled["usage"].completion_tokens < 3000
    if stream:
        assert sent[0]["status"] == 200 and any(m.get("body", b"").startswith(b"data: ") for m in sent[1:])

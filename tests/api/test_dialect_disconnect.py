"""A client that leaves a Responses or Messages request aborts the engine request and is settled once, cancelled
(the same mechanism as the chat route: api/disconnect.py and the meter), and nothing is stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qwen3_api.api.app import Settings, create_app
from qwen3_api.platform.catalog import Catalog
from tests.api.helpers import MODEL, RecordingGateway, ScriptedEngine, call_and_leave

ROUTES = {"/v1/responses": {"input": "go", "max_output_tokens": 3000},
          "/v1/messages": {"messages": [{"role": "user", "content": "go"}], "max_tokens": 3000}}


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_aborts_and_settles_cancelled(qwen3_tokenizer_dir: Any, stream: bool, path: str) -> None:
    engine = ScriptedEngine(lambda p, params, i: [9707] * 10_000, step_s=0.01)
    gateway = RecordingGateway()
    app = create_app(engine, Catalog.load(), gateway, Settings(model_path=str(qwen3_tokenizer_dir)))
    sent = asyncio.run(call_and_leave(app, {"model": MODEL, **ROUTES[path], "stream": stream}, leave_after_s=0.3,
                             path=path, engine=engine))
    [(_, _, rid)] = engine.requests
    assert engine.aborted == [rid] and not engine.active
    [settled] = gateway.settled
    assert settled["generation_id"] == rid and settled["status"] == "cancelled"
    assert settled["endpoint"] == path and 1 <= settled["usage"].completion_tokens < 3000
    if stream:
        assert sent[0]["status"] == 200 and any(m.get("body", b"").startswith(b"event: ") for m in sent[1:])
    stored = asyncio.run(gateway.responses.get("anyone", rid))
    assert stored is None  # a response the client never got is not kept

"""A client that leaves mid-request aborts the engine request and is settled once, as cancelled."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from qwen3_api.api.app import Settings, create_app
from qwen3_api.platform.catalog import Catalog
from tests.api.helpers import MODEL, RecordingGateway, ScriptedEngine, call_and_leave

ROUTES = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "go"}]},
          "/v1/completions": {"prompt": "go"}}


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_aborts_and_settles_cancelled(qwen3_tokenizer_dir: Any, stream: bool, path: str) -> None:
    engine = ScriptedEngine(lambda p, params, i: [9707] * 10_000, step_s=0.01)
    gateway = RecordingGateway()
    app = create_app(engine, Catalog.load(), gateway, Settings(model_path=str(qwen3_tokenizer_dir)))
    body = {"model": MODEL, **ROUTES[path], "max_tokens": 3000, "stream": stream}
    sent = asyncio.run(call_and_leave(app, body, leave_after_s=0.3, path=path, engine=engine))
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


def test_any_route_is_cancelled_when_its_client_leaves(qwen3_tokenizer_dir: Any) -> None:
    """The mechanism is the app's, not a route's: a route added later is cancelled the same way."""
    app = create_app(ScriptedEngine(lambda p, params, i: []), Catalog.load(), RecordingGateway(),
                     Settings(model_path=str(qwen3_tokenizer_dir)))
    seen: dict[str, Any] = {}

    @app.post("/v1/slow")
    async def slow(body: dict[str, Any]) -> dict[str, Any]:
        seen["started"] = True
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise
        return body

    t0 = time.monotonic()
    sent = asyncio.run(call_and_leave(app, {"x": 1}, leave_after_s=0.2, path="/v1/slow"))
    elapsed = time.monotonic() - t0
    assert seen == {"started": True, "cancelled": True} and elapsed < 5
    assert sent == []  # nothing sent to a client that is gone


def test_a_finished_response_is_not_cancelled(qwen3_tokenizer_dir: Any) -> None:
    """A client that hangs up right after a whole response changes nothing (completed, not cancelled)."""
    engine = ScriptedEngine(lambda p, params, i: [9707] * 5)
    gateway = RecordingGateway()
    app = create_app(engine, Catalog.load(), gateway, Settings(model_path=str(qwen3_tokenizer_dir)))
    body = {"model": MODEL, "prompt": "go", "max_tokens": 5}
    sent = asyncio.run(call_and_leave(app, body, leave_after_s=0.5, path="/v1/completions"))
    assert sent[0]["status"] == 200
    [settled] = gateway.settled
    assert settled["status"] == "completed" and settled["usage"].completion_tokens == 5

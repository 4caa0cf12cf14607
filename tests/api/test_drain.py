"""The shutdown deadline (api/drain.py) over a scripted engine: whole answers get a 503, streams an error event
and [DONE], both settle once and free the engine; after the deadline nothing new is admitted."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.api.helpers import MODEL, parse_sse


def _long(make_harness: Any) -> Any:
    return make_harness(lambda p, params, i: [9707] * 10_000, step_s=0.01)


def _wait_running(h: Any) -> None:
    deadline = time.monotonic() + 20
    while not h.engine.active:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)


def test_whole_answer_cut_at_the_deadline_is_503_and_settled(make_harness: Any) -> None:
    h = _long(make_harness)
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", h.chat(max_tokens=3000)))
    t.start()
    _wait_running(h)
    drain = h.client.app.state.api.drain
    assert drain.active == 1
    h.client.portal.call(drain.cut_all)
    t.join(10)
    r = out["r"]
    assert r.status_code == 503 and r.json()["error"]["code"] == "server_shutting_down"
    assert r.headers["retry-after"] == "1"
    [settled] = h.gateway.settled
    assert settled["status"] == "error" and 1 <= settled["usage"].completion_tokens < 3000
    assert h.engine.aborted and not h.engine.active and drain.active == 0


def test_stream_cut_at_the_deadline_ends_with_an_error_event_and_done(make_harness: Any) -> None:
    h = _long(make_harness)
    out: dict[str, Any] = {}

    def run() -> None:
        with h.client.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 3000,
                "stream": True}) as r:
            out["events"] = parse_sse(r.read().decode())

    t = threading.Thread(target=run)
    t.start()
    _wait_running(h)
    drain = h.client.app.state.api.drain
    h.client.portal.call(drain.cut_all)
    t.join(10)
    events = out["events"]
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "server_shutting_down"
    assert any(isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content") for e in events)
    [settled] = h.gateway.settled
    assert settled["status"] == "error" and settled["streamed"] and settled["usage"].completion_tokens >= 1
    assert drain.active == 0


def test_after_the_deadline_new_requests_are_refused_free(make_harness: Any) -> None:
    h = _long(make_harness)
    drain = h.client.app.state.api.drain
    h.client.portal.call(drain.cut_all)
    r = h.chat(max_tokens=5)
    assert r.status_code == 503 and r.json()["error"]["code"] == "server_shutting_down"
    streamed = h.client.post("/v1/chat/completions", json={"model": MODEL, "stream": True, "messages": [
        {"role": "user", "content": "go"}]})
    assert streamed.status_code == 503  # refused before the stream starts, not inside it
    assert not h.gateway.admitted and not h.gateway.settled and not h.engine.requests  # nothing held, nothing run

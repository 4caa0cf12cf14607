"""Upstream forwarding against a real OpenAI-protocol server on loopback (a small FastAPI app)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.pricing import Usage, price
from qwen3_api.platform.tables import generations
from tests.platform.helpers import ServerThread, catalog, make_app

UP_KEY_ENV = "QWEN3_API_TEST_UPSTREAM_KEY"
WORDS = ["alpha", "beta", "gamma", "delta"]


def state(gw: Gateway, rec: Any) -> Any:
    """The key as stored, once pending settlements are written and unused credit leases returned."""
    gw.sync_state()
    return gw.keys.get(rec.id)


def fake_upstream(seen: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible server: 4 content chunks, usage on request; x_sleep / x_status to misbehave."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        await asyncio.sleep(float(body.get("x_sleep", 0)))
        if body.get("x_status"):
            return JSONResponse({"error": {"message": "bad thing", "type": "invalid_request_error", "param": None,
                                           "code": None}}, status_code=int(body["x_status"]))
        usage = {"prompt_tokens": 11, "completion_tokens": len(WORDS), "total_tokens": 11 + len(WORDS),
                 "prompt_tokens_details": {"cached_tokens": 0}}
        base = {"id": "up-123", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return {**base, "object": "chat.completion", "usage": usage,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(WORDS)},
                                 "finish_reason": "stop", "logprobs": None}]}

        async def events() -> AsyncIterator[bytes]:
            for i, w in enumerate(WORDS):
                delta = {"role": "assistant", "content": w} if i == 0 else {"content": " " + w}
                chunk = {**base, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(float(body.get("x_chunk_delay", 0)))
            last = {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(last)}\n\n".encode()
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture
def upstream_server() -> Iterator[tuple[ServerThread, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with ServerThread(fake_upstream(seen)) as server:
        yield server, seen


@pytest.fixture
def gateway_server(db: Database, upstream_server, monkeypatch) -> Iterator[tuple[ServerThread, Gateway, Catalog]]:  # noqa: ANN001
    monkeypatch.setenv(UP_KEY_ENV, "upstream-secret")
    cat = catalog(upstream_server[0].url + "/v1", api_key_env=UP_KEY_ENV)
    gw = Gateway(db)
    with ServerThread(make_app(gw, cat)) as server:
        yield server, gw, cat


def ledger(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(generations)).mappings()]


def wait_ledger(db: Database, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(got := ledger(db)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def test_non_stream_is_forwarded_metered_from_upstream_usage_and_charged(db, upstream_server, gateway_server) -> None:  # noqa: ANN001
    server, gw, cat = gateway_server
    key, rec = gw.keys.create("up", credit=Decimal("1"))
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    resp = c.chat.completions.create(model="up/model", messages=[{"role": "user", "content": "hello"}], max_tokens=20)
    assert resp.choices[0].message.content == " ".join(WORDS)
    cost = price(cat.get("up/model"), Usage(11, 4))
    assert Decimal(str(resp.usage.model_extra["cost"])) == cost
    sent = upstream_server[1][-1]
    assert sent["body"]["model"] == "fake-upstream" and sent["auth"] == "Bearer upstream-secret"
    [row] = ledger(db)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost"], row["status"]) == (11, 4, cost, "completed")
    assert state(gw, rec).spent == cost and state(gw, rec).reserved == 0


def test_stream_is_passed_through_and_metered_from_the_usage_chunk(db, upstream_server, gateway_server) -> None:  # noqa: ANN001
    server, gw, cat = gateway_server
    key, rec = gw.keys.create("up-stream", credit=Decimal("1"))
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    chunks = list(c.chat.completions.create(model="up/model", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=20, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == " ".join(WORDS) and all(ch.id == "up-123" for ch in chunks)  # unchanged
    assert upstream_server[1][-1]["body"]["stream_options"] == {"include_usage": True}
    cost = price(cat.get("up/model"), Usage(11, 4))
    assert Decimal(str(chunks[-1].usage.model_extra["cost"])) == cost
    [row] = wait_ledger(db, 1)
    assert (row["streamed"], row["completion_tokens"], row["cost"], row["status"]) == (True, 4, cost, "completed")
    assert row["ttft_s"] is not None and state(gw, rec).spent == cost


def test_upstream_down_is_502_and_timeout_is_504_and_both_cost_nothing(db: Database, monkeypatch) -> None:  # noqa: ANN001
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()  # nothing listens there now
    seen: list[dict[str, Any]] = []
    with ServerThread(fake_upstream(seen)) as slow:
        cat = catalog(dead)
        cat.entries["slow/model"] = catalog(slow.url + "/v1").get("up/model")
        cat.entries["slow/model"].id = "slow/model"
        gw = Gateway(db)
        with ServerThread(make_app(gw, cat)) as server:
            key, rec = gw.keys.create("k", credit=Decimal("1"))
            c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.APIStatusError) as down:
                c.chat.completions.create(model="up/model", messages=[{"role": "user", "content": "x"}], max_tokens=5)
            assert down.value.status_code == 502 and down.value.code == "upstream_unavailable"
            with pytest.raises(openai.APIStatusError) as late:
                c.chat.completions.create(model="slow/model", messages=[{"role": "user", "content": "x"}],
                                          max_tokens=5, extra_body={"x_timeout": 0.3, "x_sleep": 2})
            assert late.value.status_code == 504 and late.value.code == "upstream_timeout"
            with pytest.raises(openai.BadRequestError) as bad:
                c.chat.completions.create(model="slow/model", messages=[{"role": "user", "content": "x"}],
                                          max_tokens=5, extra_body={"x_status": 400})
            assert "bad thing" in bad.value.message
            with pytest.raises(openai.APIStatusError) as broken:
                c.chat.completions.create(model="slow/model", messages=[{"role": "user", "content": "x"}],
                                          max_tokens=5, extra_body={"x_status": 500})
            assert broken.value.status_code == 502 and broken.value.body["type"] == "upstream_error"
            got = wait_ledger(db, 4)
            assert [r["status"] for r in got] == ["error"] * 4 and all(r["cost"] == 0 for r in got)
            assert state(gw, rec).spent == 0 and state(gw, rec).reserved == 0


def test_upstream_key_missing_from_the_environment_is_a_clear_502(db, upstream_server, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv(UP_KEY_ENV, raising=False)
    gw = Gateway(db)
    with ServerThread(make_app(gw, catalog(upstream_server[0].url + "/v1", api_key_env=UP_KEY_ENV))) as server:
        key, _ = gw.keys.create("k")
        r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "up/model", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 502 and UP_KEY_ENV in r.json()["error"]["message"]
        assert upstream_server[1] == []


def test_upstream_requests_hold_credit_on_an_upper_bound_of_the_prompt(db, gateway_server) -> None:  # noqa: ANN001
    server, gw, cat = gateway_server
    key, _ = gw.keys.create("tiny", credit=Decimal("0.0001"))
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="up/model", messages=[{"role": "user", "content": "x" * 100}], max_tokens=100)
    assert err.value.status_code == 402
    assert ledger(db) == []


def test_client_leaving_an_upstream_stream_is_charged_for_the_chunks_it_got(db, gateway_server) -> None:  # noqa: ANN001
    server, gw, cat = gateway_server
    key, rec = gw.keys.create("leaver", credit=Decimal("1"))
    body = {"model": "up/model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "stream": True,
            "x_chunk_delay": 0.3}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # one content chunk, then gone
    [row] = wait_ledger(db, 1)
    assert row["status"] == "cancelled" and row["streamed"] is True and 1 <= row["completion_tokens"] < 4
    assert row["cost"] == price(cat.get("up/model"), Usage(row["prompt_tokens"], row["completion_tokens"]))
    assert state(gw, rec).spent == row["cost"]

"""The platform's rules through the real app (qwen3_api.api.create_app) and a real engine over a tiny random
checkpoint, with the official `openai` client, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from qwen3_api.api.app import Settings, create_app
from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.async_engine import AsyncLLMEngine
from qwen3_api.platform.catalog import Catalog, CatalogEntry
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.pricing import Usage, price, reservation
from qwen3_api.platform.tables import generations
from tests.e2e.helpers import start_server, stop_server
from tests.platform.helpers import MODEL, ServerThread

ENTRY = Catalog.load().get(MODEL)
MSG = [{"role": "user", "content": "Say something."}]


class FlakyEngine:
    """The real engine, except that a request whose prompt ends in FAIL_TOKEN fails before its first token."""

    def __init__(self, engine: AsyncLLMEngine) -> None:
        self._engine = engine
        self.fail_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, prompt_ids: list[int], params: Any, request_id: str) -> AsyncIterator[Any]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("simulated engine failure before the first token")
        async for out in self._engine.generate(prompt_ids, params, request_id):
            yield out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[tuple[FlakyEngine, Path]]:
    model_dir = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tokenizer_dir=qwen3_tokenizer_dir, seed=3)
    real = AsyncLLMEngine.from_args(EngineArgs(model=str(model_dir), device="cpu", kv_cache_memory=0.02))
    yield FlakyEngine(real), model_dir
    asyncio.run(real.shutdown())


@pytest.fixture
def serve(db: Database, engine) -> Iterator[Callable[..., tuple[ServerThread, Gateway]]]:  # noqa: ANN001
    running: list[ServerThread] = []

    def start(**kwargs: Any) -> tuple[ServerThread, Gateway]:
        gateway = Gateway(db, admin_key="adm", **kwargs)
        app = create_app(engine[0], Catalog.load(), gateway,
                         Settings(model_path=str(engine[1]), shutdown_engine=False))
        server = ServerThread(app).start()
        running.append(server)
        return server, gateway

    yield start
    for server in running:
        server.stop()


def state(gw: Gateway, rec: Any) -> Any:
    """The key as stored, once pending settlements are written and unused credit leases returned."""
    gw.sync_state()
    return gw.keys.get(rec.id)


def oai(server: ServerThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def ledger(db: Database, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        with db.engine.connect() as conn:
            got = [dict(r) for r in conn.execute(select(generations).order_by(generations.c.created_at)).mappings()]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_auth_model_and_rate_limit_errors(serve) -> None:  # noqa: ANN001
    server, gw = serve()
    with pytest.raises(openai.AuthenticationError) as bad:
        oai(server, "sk-nope").chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    assert bad.value.code == "invalid_api_key" and bad.value.body["type"] == "authentication_error"
    assert httpx.get(server.url + "/v1/models").status_code in (200, 401)  # listing may be public; chat is not
    restricted, _ = gw.keys.create("other-models", models=["some/other"])
    with pytest.raises(openai.PermissionDeniedError):
        oai(server, restricted).chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    limited, _ = gw.keys.create("one-rpm", rpm=1)
    ok = oai(server, limited).chat.completions.with_raw_response.create(model=MODEL, messages=MSG, max_tokens=2)
    assert ok.headers["x-ratelimit-limit-requests"] == "1" and ok.headers["x-ratelimit-remaining-requests"] == "0"
    assert ok.headers["x-cost-currency"] == "CNY"
    with pytest.raises(openai.RateLimitError) as err:
        oai(server, limited).chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    h = err.value.response.headers
    assert int(h["retry-after"]) >= 1 and h["x-ratelimit-limit"] == "1" and h["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-reset" in h


def test_cost_matches_catalog_prices_and_the_ledger(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("payer", credit=Decimal("1"))
    resp = oai(server, key).chat.completions.create(model=MODEL, messages=MSG, max_tokens=7)
    u = resp.usage
    expected = price(ENTRY, Usage(u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.cached_tokens or 0))
    assert expected == (Decimal(u.prompt_tokens) * Decimal("0.0012") + Decimal(u.completion_tokens) * Decimal("0.00375")) / 1000
    assert Decimal(str(u.model_extra["cost"])) == expected
    [row] = ledger(db, 1)
    assert (row["id"], row["cost"], row["status"], row["streamed"]) == (resp.id, expected, "completed", False)
    assert state(gw, rec).spent == expected and state(gw, rec).reserved == 0
    mine = httpx.get(server.url + "/v1/generation", params={"id": resp.id}, headers={"Authorization": f"Bearer {key}"})
    assert Decimal(mine.json()["data"]["total_cost"]) == expected
    me = httpx.get(server.url + "/v1/key", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert Decimal(me["usage"]) == expected and Decimal(me["limit_remaining"]) == 1 - expected
    made = httpx.post(server.url + "/admin/keys", json={"name": "via-admin", "rpm": 3},
                      headers={"Authorization": "Bearer adm"})
    assert made.status_code == 201
    assert oai(server, made.json()["key"]).chat.completions.create(model=MODEL, messages=MSG, max_tokens=2).id
    assert httpx.get(server.url + "/admin/keys", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_ledger_after_streamed_cancelled_and_failed_requests(serve, db: Database, engine) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("streams", credit=Decimal("5"))
    chunks = list(oai(server, key).chat.completions.create(model=MODEL, messages=MSG, max_tokens=6, stream=True,
                                                           stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    [done] = ledger(db, 1)
    assert done["status"] == "completed" and done["streamed"] is True and done["ttft_s"] is not None
    assert done["completion_tokens"] == chunks[-1].usage.completion_tokens

    seen = 0
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": MODEL, "messages": MSG, "max_tokens": 3000, "stream": True}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"]:
                seen += 1
                if seen == 3:
                    break
    cancelled = ledger(db, 2)[-1]
    assert cancelled["status"] == "cancelled" and 1 <= cancelled["completion_tokens"] < 3000
    assert cancelled["cost"] == price(ENTRY, Usage(cancelled["prompt_tokens"], cancelled["completion_tokens"],
                                                   cancelled["cached_tokens"]))

    engine[0].fail_next = True
    with pytest.raises(openai.APIError):
        oai(server, key).chat.completions.create(model=MODEL, messages=MSG, max_tokens=5)
    failed = ledger(db, 3)[-1]
    assert failed["status"] == "error" and failed["cost"] == 0 and failed["completion_tokens"] == 0
    time.sleep(0.3)
    all_rows = ledger(db, 3)
    assert len(all_rows) == 3
    after = state(gw, rec)
    assert after.spent == sum(r["cost"] for r in all_rows) and after.reserved == 0


def test_insufficient_credit_and_fifty_concurrent_against_a_credit_for_ten(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    probe, _ = gw.keys.create("probe")
    prompt = oai(server, probe).chat.completions.create(model=MODEL, messages=MSG, max_tokens=1).usage.prompt_tokens
    each = reservation(ENTRY, prompt, 16)
    poor, _ = gw.keys.create("poor", credit=each - Decimal("0.0000000001"))
    with pytest.raises(openai.APIStatusError) as err:
        oai(server, poor).chat.completions.create(model=MODEL, messages=MSG, max_tokens=16)
    assert err.value.status_code == 402 and "Insufficient credits" in err.value.message
    key, rec = gw.keys.create("crowd", credit=each * 10)

    async def burst() -> list[Any]:
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)
        try:
            return await asyncio.gather(*[c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=16)
                                          for _ in range(50)], return_exceptions=True)
        finally:
            await c.close()

    results = asyncio.run(burst())
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    assert len(ok) + len(refused) == 50 and len(ok) >= 10
    after = state(gw, rec)
    assert after.reserved == 0 and after.spent <= after.credit and after.credit_left >= 0
    assert after.spent == sum(Decimal(str(r.usage.model_extra["cost"])) for r in ok) or after.spent == sum(
        price(ENTRY, Usage(r.usage.prompt_tokens, r.usage.completion_tokens)) for r in ok)
    if all(r.usage.completion_tokens == 16 for r in ok):
        assert len(ok) == 10 and after.spent == each * 10


@pytest.mark.parametrize("route", ["chat/completions", "completions"])
def test_every_route_carries_the_id_and_currency_and_stops_when_the_client_leaves(serve, db: Database, route) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("routes", credit=Decimal("5"))
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, **({"messages": MSG} if route.startswith("chat") else {"prompt": "Say something."})}
    whole = httpx.post(f"{server.url}/v1/{route}", json={**body, "max_tokens": 4}, headers=auth, timeout=60)
    assert whole.status_code == 200
    assert whole.headers["x-generation-id"] == whole.json()["id"] and whole.headers["x-cost-currency"] == "CNY"
    with httpx.stream("POST", f"{server.url}/v1/{route}", json={**body, "max_tokens": 4, "stream": True},
                      headers=auth, timeout=60) as r:
        ids = {json.loads(line[6:])["id"] for line in r.iter_lines() if line.startswith("data: {")}
        assert ids == {r.headers["x-generation-id"]} and r.headers["x-cost-currency"] == "CNY"
    # A whole (non-streamed) answer whose client gives up: the engine stops, the row says cancelled and
    # charges only the tokens generated before it left.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/{route}", json={**body, "max_tokens": 3000, "logit_bias": {"151645": -100, "151643": -100}},
                   headers=auth, timeout=1.5)
    left = ledger(db, 3)[-1]
    assert left["status"] == "cancelled" and 1 <= left["completion_tokens"] < 3000, left
    assert left["duration_s"] < 10
    deadline = time.monotonic() + 10
    while serve_stats(server)["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert serve_stats(server)["running"] == 0
    after = state(gw, rec)
    assert after.reserved == 0 and after.spent == sum(row["cost"] for row in ledger(db, 3))


def serve_stats(server: ServerThread) -> dict[str, Any]:
    return httpx.get(server.url + "/health", timeout=5).json()


@pytest.fixture(scope="module")
def upstream_qwen3(engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:  # noqa: ANN001
    """A second qwen3-api (`serve --no-auth`, its own ledger) on loopback: the upstream of a catalog entry."""
    root = tmp_path_factory.mktemp("upstream")
    db_url = f"sqlite:///{root / 'upstream.db'}"
    proc, base = start_server(["--model", str(engine[1]), "--no-auth", "--database-url", db_url, "--kv-cache-memory",
                               "0.02", "--device", "cpu", "--log-level", "warning"], root / "upstream.log",
                              timeout_s=180)
    try:
        yield base + "/v1", db_url
    finally:
        stop_server(proc)


def test_a_second_qwen3_api_server_as_upstream(db: Database, engine, upstream_qwen3) -> None:  # noqa: ANN001
    up_url, up_db_url = upstream_qwen3
    cat = Catalog.load()
    cat.entries["up/qwen"] = CatalogEntry(id="up/qwen", prompt_price=Decimal("0.002"), completion_price=Decimal("0.006"),
                                          base_url=up_url, upstream_model=MODEL)
    gw = Gateway(db)
    app = create_app(engine[0], cat, gw, Settings(model_path=str(engine[1]), shutdown_engine=False))
    key, rec = gw.keys.create("via-upstream", credit=Decimal("1"), models=["up/qwen"])
    with ServerThread(app) as server:
        c = oai(server, key)
        resp = c.chat.completions.create(model="up/qwen", messages=MSG, max_tokens=6)
        u = resp.usage
        assert u.completion_tokens >= 1 and u.prompt_tokens >= 1
        cost = price(cat.get("up/qwen"), Usage(u.prompt_tokens, u.completion_tokens))
        assert Decimal(str(u.model_extra["cost"])) == cost
        chunks = list(c.chat.completions.create(model="up/qwen", messages=MSG, max_tokens=5, stream=True))
        assert chunks[-1].usage is not None and sum(1 for ch in chunks if ch.choices) >= 1
        stream_cost = price(cat.get("up/qwen"), Usage(chunks[-1].usage.prompt_tokens,
                                                      chunks[-1].usage.completion_tokens))
        assert Decimal(str(chunks[-1].usage.model_extra["cost"])) == stream_cost
        raw = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": "up/qwen", "messages": MSG, "max_tokens": 2}, timeout=60)
        assert raw.headers["x-generation-id"] == raw.json()["id"]  # our id, not the upstream's
        with pytest.raises(openai.PermissionDeniedError):
            c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)  # this key: upstream only
    rows = ledger(db, 3)
    assert [(r["model"], r["streamed"], r["status"]) for r in rows] == [("up/qwen", False, "completed"),
                                                                       ("up/qwen", True, "completed"),
                                                                       ("up/qwen", False, "completed")]
    assert rows[2]["id"] == raw.json()["id"]
    assert rows[0]["completion_tokens"] == u.completion_tokens and rows[0]["cost"] == cost
    assert state(gw, rec).spent == cost + stream_cost + rows[2]["cost"]
    upstream_db = Database(up_db_url)
    try:
        up_rows = ledger(upstream_db, 2)
        assert any(r["key_hash"] == "anonymous" and r["completion_tokens"] == u.completion_tokens for r in up_rows)
    finally:
        upstream_db.dispose()

"""Every gateway rule through HTTP with the official `openai` client, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway, NoAuthGateway
from qwen3_api.platform.keys import KeyRecord
from qwen3_api.platform.pricing import Usage, price, reservation
from qwen3_api.platform.tables import generations
from tests.platform.helpers import MODEL, OTHER, ServerThread, catalog, make_app

ADMIN = "admin-secret-for-tests"
ENTRY = catalog().get(MODEL)
MSG = [{"role": "user", "content": "one two three four five"}]  # 5 prompt "tokens" in the harness


@pytest.fixture
def serve(db: Database) -> Iterator[Callable[..., tuple[ServerThread, Gateway]]]:
    running: list[ServerThread] = []

    def start(gateway_cls: type[Gateway] = Gateway, **kwargs: Any) -> tuple[ServerThread, Gateway]:
        kwargs.setdefault("admin_key", ADMIN)
        gateway = gateway_cls(db, **kwargs)
        server = ServerThread(make_app(gateway, catalog())).start()
        running.append(server)
        return server, gateway

    yield start
    for server in running:
        server.stop()


def client(server: ServerThread, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=retries)


def chat(c: openai.OpenAI, model: str = MODEL, **extra: Any) -> Any:
    max_tokens = extra.pop("max_tokens", 8)
    return c.chat.completions.create(model=model, messages=MSG, max_tokens=max_tokens, extra_body=extra or None)


def rows(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(generations).order_by(generations.c.created_at)).mappings()]


def wait_rows(db: Database, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = rows(db)
        if len(got) >= n:
            return got
        time.sleep(0.02)
    raise AssertionError(f"expected {n} ledger rows, have {len(rows(db))}")


def key_state(gateway: Gateway, record: KeyRecord) -> KeyRecord:
    """The key as stored, once pending settlements are written and unused credit leases returned."""
    gateway.sync_state()
    fresh = gateway.keys.get(record.id)
    assert fresh is not None
    return fresh


def test_missing_unknown_revoked_and_expired_keys_get_401(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSG})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == "invalid_api_key"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    revoked, rec = gw.keys.create("revoked")
    gw.keys.revoke(rec.id)
    expired, _ = gw.keys.create("expired", expires_at=datetime.now(UTC) - timedelta(minutes=1))
    for key, words in (("sk-not-a-real-key", "Invalid"), (revoked, "revoked"), (expired, "expired")):
        with pytest.raises(openai.AuthenticationError) as err:
            chat(client(server, key))
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
        assert words in err.value.message
    assert rows(db) == []


def test_revocation_takes_effect_at_once_through_admin_and_within_the_ttl_elsewhere(serve) -> None:  # noqa: ANN001
    server, gw = serve(cache_ttl_s=0.3)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = httpx.post(server.url + "/admin/keys", json={"name": "temp"}, headers=admin).json()
    c = client(server, made["key"])
    assert chat(c).usage.completion_tokens == 8
    assert httpx.delete(f"{server.url}/admin/keys/{made['data']['id']}", headers=admin).json()["data"]["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError):
        chat(c)  # the admin route invalidated the cache: no TTL wait
    other, rec = gw.keys.create("cli-revoked")
    c2 = client(server, other)
    chat(c2)  # now cached
    gw.keys.revoke(rec.id)  # as `qwen3-api keys revoke` would, from another process
    time.sleep(0.35)
    with pytest.raises(openai.AuthenticationError):
        chat(c2)


def test_key_restricted_to_other_models_gets_403(serve) -> None:  # noqa: ANN001
    server, gw = serve()
    key, _ = gw.keys.create("only-other", models=[OTHER])
    with pytest.raises(openai.PermissionDeniedError) as err:
        chat(client(server, key))
    assert err.value.status_code == 403 and MODEL in err.value.message
    assert chat(client(server, key), model=OTHER).usage.completion_tokens == 8


def test_cost_is_the_catalog_price_and_the_generation_is_visible_only_to_its_key(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("payer", credit=Decimal("10"))
    other, _ = gw.keys.create("someone-else")
    resp = chat(client(server, key), max_tokens=37)
    expected = (Decimal(5) * Decimal("0.0012") + Decimal(37) * Decimal("0.00375")) / 1000
    assert Decimal(resp.usage.model_extra["cost_exact"]) == expected == Decimal("0.00014475")
    [row] = rows(db)
    assert (row["id"], row["prompt_tokens"], row["completion_tokens"], row["cost"]) == (resp.id, 5, 37, expected)
    assert (row["status"], row["streamed"], row["key_hash"]) == ("completed", False, rec.key_hash)
    after = key_state(gw, rec)
    assert (after.spent, after.reserved, after.credit_left) == (expected, 0, Decimal(10) - expected)
    mine = httpx.get(f"{server.url}/v1/generation", params={"id": resp.id}, headers={"Authorization": f"Bearer {key}"})
    assert mine.status_code == 200
    body = mine.json()["data"]
    assert (body["total_cost"], body["tokens_completion"], body["status"]) == ("0.00014475", 37, "completed")
    theirs = httpx.get(f"{server.url}/v1/generation", params={"id": resp.id}, headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "generation_not_found"
    anon = httpx.get(f"{server.url}/v1/generation", params={"id": resp.id})
    assert anon.status_code == 401


def test_streamed_generation_is_recorded_once_with_ttft(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("streamer", credit=Decimal("1"))
    stream = client(server, key).chat.completions.create(model=MODEL, messages=MSG, max_tokens=12, stream=True,
                                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 12
    usage = chunks[-1].usage
    assert usage.completion_tokens == 12
    [row] = wait_rows(db, 1)
    assert (row["id"], row["streamed"], row["status"], row["completion_tokens"]) == (chunks[0].id, True, "completed", 12)
    assert row["ttft_s"] is not None and row["ttft_s"] <= row["duration_s"]
    assert key_state(gw, rec).spent == price(ENTRY, Usage(5, 12)) and key_state(gw, rec).reserved == 0


def test_client_disconnect_mid_stream_is_charged_for_the_tokens_generated_once(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("leaver", credit=Decimal("1"))
    body = {"model": MODEL, "messages": MSG, "max_tokens": 400, "stream": True, "x_delay": 0.02}
    seen, gen_id = 0, None
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                gen_id = event["id"]
                seen += bool(event["choices"][0]["delta"].get("content"))
                if seen == 5:
                    break
    [row] = wait_rows(db, 1)
    time.sleep(0.3)  # nothing else may arrive later
    assert len(rows(db)) == 1
    assert row["id"] == gen_id and row["status"] == "cancelled" and row["streamed"] is True
    assert 5 <= row["completion_tokens"] < 400
    assert row["cost"] == price(ENTRY, Usage(5, row["completion_tokens"]))
    after = key_state(gw, rec)
    assert after.spent == row["cost"] and after.reserved == 0


def test_failure_before_any_token_costs_nothing_and_a_retry_is_a_new_generation(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("unlucky", credit=Decimal("1"))
    with pytest.raises(openai.InternalServerError):
        chat(client(server, key, retries=1), x_fail="before")  # the SDK retries once: two generations
    got = wait_rows(db, 2)
    assert len({r["id"] for r in got}) == 2
    assert all(r["status"] == "error" and r["cost"] == 0 and r["completion_tokens"] == 0 for r in got)
    after = key_state(gw, rec)
    assert (after.spent, after.reserved) == (0, 0)
    first, second = chat(client(server, key)), chat(client(server, key))
    assert first.id != second.id and len(rows(db)) == 4
    assert key_state(gw, rec).spent == 2 * price(ENTRY, Usage(5, 8))


def test_insufficient_credit_is_402_and_changes_nothing(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    key, rec = gw.keys.create("poor", credit=reservation(ENTRY, 5, 100) - Decimal("0.0000001"))
    with pytest.raises(openai.APIStatusError) as err:
        chat(client(server, key), max_tokens=100)
    assert err.value.status_code == 402 and "Insufficient credits" in err.value.message
    assert err.value.code == "insufficient_credits"
    assert rows(db) == [] and key_state(gw, rec).reserved == 0
    assert chat(client(server, key), max_tokens=99).usage.completion_tokens == 99  # a smaller hold fits


def test_fifty_concurrent_requests_against_a_credit_covering_ten(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    each = reservation(ENTRY, 5, 50)
    key, rec = gw.keys.create("crowd", credit=each * 10)

    async def burst() -> list[Any]:
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        calls = [c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=50, extra_body={"x_hold": 0.5})
                 for _ in range(50)]
        try:
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await c.close()

    results = asyncio.run(burst())
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    assert (len(ok), len(refused)) == (10, 40), [type(r) for r in results]
    after = key_state(gw, rec)
    assert after.spent == each * 10 and after.reserved == 0 and after.credit_left == 0
    assert len(rows(db)) == 10


def test_rate_limits_answer_429_with_retry_after_and_ratelimit_headers(serve) -> None:  # noqa: ANN001
    server, gw = serve()
    key, _ = gw.keys.create("rpm2", rpm=2)
    c = client(server, key)
    ok = c.chat.completions.with_raw_response.create(model=MODEL, messages=MSG, max_tokens=4)
    assert ok.headers["X-RateLimit-Limit-Requests"] == "2" and ok.headers["X-RateLimit-Remaining-Requests"] == "1"
    assert ok.headers["X-Cost-Currency"] == "CNY"
    chat(c)
    with pytest.raises(openai.RateLimitError) as err:
        chat(c)
    h = err.value.response.headers
    assert 1 <= int(h["Retry-After"]) <= 60 and h["X-RateLimit-Limit"] == "2" and h["X-RateLimit-Remaining"] == "0"
    assert int(h["X-RateLimit-Reset"]) > time.time() * 1000
    assert err.value.code == "rate_limit_exceeded" and "requests per minute" in err.value.message


def test_tokens_per_minute_counts_max_tokens_then_the_true_usage(serve) -> None:  # noqa: ANN001
    server, gw = serve()
    key, _ = gw.keys.create("tpm100", tpm=100)
    c = client(server, key)
    chat(c, max_tokens=90, x_tokens=1)  # holds 95 tokens while running, 6 once settled
    assert chat(c, max_tokens=89).usage.completion_tokens == 89  # 6 + 94 <= 100: fits only after the correction
    with pytest.raises(openai.RateLimitError) as err:
        chat(c, max_tokens=10)
    assert err.value.response.headers["X-RateLimit-Limit"] == "100" and "tokens per minute" in err.value.message
    with pytest.raises(openai.RateLimitError) as too_big:
        chat(c, max_tokens=200)
    assert "lower max_tokens" in too_big.value.message


def test_self_service_key_view(serve) -> None:  # noqa: ANN001
    server, gw = serve()
    key, _ = gw.keys.create("me", credit=Decimal("2"), rpm=30, tpm=5000, models=[MODEL])
    chat(client(server, key))
    data = httpx.get(server.url + "/v1/key", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    cost = price(ENTRY, Usage(5, 8))
    assert Decimal(data["usage"]) == cost and Decimal(data["limit"]) == 2
    assert Decimal(data["limit_remaining"]) == 2 - cost
    assert data["rate_limit"] == {"requests_per_minute": 30, "tokens_per_minute": 5000}
    assert data["models"] == [MODEL] and data["usage_last_24h"]["requests"] == 1
    assert key not in json.dumps(data) and data["label"] == f"sk-…{key[-4:]}"


def test_admin_api(serve, db: Database) -> None:  # noqa: ANN001
    server, gw = serve()
    url, admin = server.url + "/admin/keys", {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    made = httpx.post(url, json={"name": "svc", "credit": "0.5", "rpm": 10, "models": [MODEL]}, headers=admin)
    assert made.status_code == 201
    key, kid = made.json()["key"], made.json()["data"]["id"]
    assert made.json()["data"]["credit"] == "0.5" and made.json()["data"]["label"] == f"sk-…{key[-4:]}"
    listing = httpx.get(url, headers=admin).text
    assert key not in listing and key[3:15] not in listing and '"svc"' in listing
    assert httpx.post(f"{url}/{kid}/top-up", json={"amount": "1.5"}, headers=admin).json()["data"]["credit"] == "2"
    patched = httpx.patch(f"{url}/{kid}", json={"rpm": None, "tpm": 999}, headers=admin).json()["data"]
    assert (patched["rpm"], patched["tpm"]) == (None, 999)
    assert httpx.get(f"{url}/999999", headers=admin).status_code == 404
    assert httpx.post(url, json={"name": "bad", "credit": "-1"}, headers=admin).status_code == 422
    chat(client(server, key))
    by_model = httpx.get(server.url + "/admin/usage", params={"by": "model"}, headers=admin).json()["data"]
    assert by_model[0]["group"] == MODEL and by_model[0]["requests"] == 1
    assert httpx.delete(f"{url}/{kid}", headers=admin).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        chat(client(server, key))
    server2, _ = serve(admin_key="")
    disabled = httpx.get(server2.url + "/admin/keys", headers=admin)
    assert disabled.status_code == 403 and "QWEN3_API_ADMIN_KEY" in disabled.json()["error"]["message"]


def test_no_auth_still_prices_and_records_usage(serve, db: Database) -> None:  # noqa: ANN001
    server, _ = serve(NoAuthGateway)
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSG, "max_tokens": 8})
    assert r.status_code == 200
    assert Decimal(r.json()["usage"]["cost_exact"]) == price(ENTRY, Usage(5, 8))
    [row] = rows(db)
    assert row["key_hash"] == "anonymous" and row["cost"] == price(ENTRY, Usage(5, 8))
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(generations)).scalar_one() == 1

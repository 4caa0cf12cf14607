"""The admin API the console's pages read (routes/admin_activity.py), with the admin key as a bearer token:
usage by day and model, top keys, the generations page / CSV / row, the engine's status, /v1/models' extras."""

from __future__ import annotations

import csv
import io

from qwen3_api.api.engine_info import TokenRate
from tests.api.helpers import ADMIN, MODEL, Console

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _chat(console: Console, key: str, max_tokens: int = 20) -> str:
    r = console.client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                    "max_tokens": max_tokens})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_generations_filters_pages_csv_and_one_row(console: Console) -> None:
    alice, bob = console.new_key(), console.new_key()
    ids = [_chat(console, alice), _chat(console, bob), _chat(console, alice)]
    c = console.client()
    page = c.get("/admin/generations", params={"limit": 2}, headers=AUTH).json()
    assert page["total"] == 3 and [r["id"] for r in page["data"]] == ids[::-1][:2]
    older = c.get("/admin/generations", params={"limit": 2, "offset": 2}, headers=AUTH).json()
    assert [r["id"] for r in older["data"]] == [ids[0]]
    keys = c.get("/admin/keys", headers=AUTH).json()["data"]
    alice_id = keys[0]["id"]
    theirs = c.get("/admin/generations", params={"key_id": alice_id}, headers=AUTH).json()
    assert theirs["total"] == 2 and {r["key_id"] for r in theirs["data"]} == {alice_id}
    assert c.get("/admin/generations", params={"id": ids[1][:20]}, headers=AUTH).json()["total"] == 1
    assert c.get("/admin/generations", params={"status": "error"}, headers=AUTH).json()["total"] == 0
    row = c.get(f"/admin/generations/{ids[1]}", headers=AUTH).json()["data"]
    assert row["key_id"] == keys[1]["id"] and row["completion_tokens"] > 0 and row["reasoning_tokens"] > 0
    assert row["ttft_ms"] is not None and row["cost"] != "0"
    exported = c.get("/admin/generations.csv", params={"key_id": alice_id}, headers=AUTH)
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["id"] for r in table] == [ids[2], ids[0]] and table[0]["key_label"] == keys[0]["label"]


def test_bad_filters_are_openai_shaped_400s_and_404s(console: Console) -> None:
    c = console.client()
    r = c.get("/admin/generations", params={"since": "2026-01-02", "until": "2026-01-01"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "since"
    r = c.get("/admin/generations", params={"status": "lost"}, headers=AUTH)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert c.get("/admin/generations", params={"limit": 1000}, headers=AUTH).status_code == 400
    r = c.get("/admin/usage/daily", params={"key_id": 99}, headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    r = c.get("/admin/generations/chatcmpl-nope", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "generation_not_found"


def test_usage_by_day_lists_every_day_and_top_keys_rank_by_spend(console: Console) -> None:
    small, big = console.new_key(), console.new_key()
    _chat(console, small, max_tokens=2)
    _chat(console, big, max_tokens=30)
    _chat(console, big, max_tokens=30)
    c = console.client()
    daily = c.get("/admin/usage/daily", params={"days": 7}, headers=AUTH).json()
    assert len(daily["days"]) == 7 and daily["days"][-1] == daily["data"][0]["day"]
    assert sum(r["requests"] for r in daily["data"]) == 3 and daily["data"][0]["model"] == MODEL
    top = c.get("/admin/usage/keys", headers=AUTH).json()["data"]
    assert [r["requests"] for r in top] == [2, 1] and float(top[0]["cost"]) > float(top[1]["cost"])


def test_engine_status_and_model_facts(console: Console) -> None:
    c = console.client()
    engine = c.get("/admin/engine", headers=AUTH).json()["data"]
    assert engine["status"] == "ok" and engine["running"] == 0 and engine["max_model_len"] == 4096
    assert engine["tokens_per_second"] is None  # one sample is no rate yet
    [card] = c.get("/v1/models", headers={"Authorization": f"Bearer {console.new_key()}"}).json()["data"]
    assert card["hosting"] == "local"
    assert c.get("/admin/engine", headers={"Authorization": f"Bearer {console.new_key()}"}).status_code == 401


def test_token_rate_spans_the_window() -> None:
    rate = TokenRate(window_s=10)
    assert rate.rate(0, 100.0) is None
    assert rate.rate(50, 105.0) == 10.0
    assert rate.rate(150, 115.0) == 10.0  # base: the sample at 105 (the newest at least 10 s old)
    assert rate.rate(150, 130.0) == 0.0


def test_the_routes_are_in_the_published_schema(console: Console) -> None:
    paths = console.client().get("/openapi.json").json()["paths"]
    for path in ("/admin/usage/daily", "/admin/usage/keys", "/admin/generations", "/admin/generations.csv",
                 "/admin/generations/{generation_id}", "/admin/engine", "/v1/key/usage", "/v1/key/generations",
                 "/v1/key/generations.csv", "/console/api/session"):
        assert path in paths, path
    assert "text/csv" in paths["/admin/generations.csv"]["get"]["responses"]["200"]["content"]

"""The ledger's read side for dashboards (ledger_queries.py), on SQLite and PostgreSQL: filters, pages, days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from qwen3_api.platform.db import Database
from qwen3_api.platform.keys import KeyStore
from qwen3_api.platform.ledger import GenerationRecord, insert_generations
from qwen3_api.platform.ledger_queries import (
    GenerationFilter,
    daily_usage,
    days_back,
    get_generation_row,
    iter_generations,
    list_generations,
    usage_by_key,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _gen(i: int, key_hash: str, *, model: str = "m/a", status: str = "completed", cost: str = "0.5",
         days_ago: int = 0) -> GenerationRecord:
    return GenerationRecord(
        id=f"chatcmpl-{i:04d}_x", key_hash=key_hash, model=model, prompt_tokens=10, cached_tokens=2,
        completion_tokens=5, reasoning_tokens=3, cost=Decimal(cost), currency="CNY", status=status,
        streamed=i % 2 == 0, ttft_s=0.25, duration_s=1.5, created_at=NOW - timedelta(days=days_ago, minutes=i))


def _seed(db: Database) -> tuple[int, str, str]:
    store = KeyStore(db)
    _, alice = store.create("alice")
    _, bob = store.create("bob")
    rows = [_gen(1, alice.key_hash), _gen(2, alice.key_hash, model="m/b", status="error", cost="0"),
            _gen(3, bob.key_hash, cost="2"), _gen(4, alice.key_hash, days_ago=2),
            _gen(5, "console-admin", cost="0.25"), _gen(6, bob.key_hash, days_ago=40, cost="9")]
    with db.engine.begin() as conn:
        insert_generations(conn, rows)
    return alice.id, alice.key_hash, bob.key_hash


def test_filters_pages_and_the_key_join(db: Database) -> None:
    alice_id, alice, _ = _seed(db)
    with db.engine.connect() as conn:
        rows, total = list_generations(conn, GenerationFilter(), limit=2, offset=0)
        assert total == 6 and [r["id"] for r in rows] == ["chatcmpl-0001_x", "chatcmpl-0002_x"]  # newest first
        rows, total = list_generations(conn, GenerationFilter(), limit=2, offset=4)
        assert total == 6 and [r["id"] for r in rows] == ["chatcmpl-0004_x", "chatcmpl-0006_x"]
        mine, total = list_generations(conn, GenerationFilter(key_hash=alice), limit=50, offset=0)
        assert total == 3 and {r["key_id"] for r in mine} == {alice_id} and mine[0]["key_name"] == "alice"
        assert "key_hash" not in mine[0] and alice not in str(mine)
        errors, _ = list_generations(conn, GenerationFilter(status="error", model="m/b"), limit=50, offset=0)
        assert [r["id"] for r in errors] == ["chatcmpl-0002_x"]
        window = GenerationFilter(since=NOW - timedelta(days=1), until=NOW - timedelta(minutes=1))  # exclusive: 0001 is out
        assert [r["id"] for r in list_generations(conn, window, limit=50, offset=0)[0]] == [
            "chatcmpl-0002_x", "chatcmpl-0003_x", "chatcmpl-0005_x"]
        # An id prefix matches literally: "_" is no wildcard.
        assert list_generations(conn, GenerationFilter(id="chatcmpl-0003_"), limit=50, offset=0)[1] == 1
        assert list_generations(conn, GenerationFilter(id="chatcmpl-000_"), limit=50, offset=0)[1] == 0
        admin = get_generation_row(conn, "chatcmpl-0005_x")
        assert admin is not None and admin["key_label"] == "console-admin" and admin["key_id"] is None
        assert admin["cost"] == "0.25" and admin["ttft_ms"] == 250.0 and admin["duration_ms"] == 1500.0
        assert [r["id"] for r in iter_generations(conn, GenerationFilter(key_hash=alice), batch=1)] == [
            r["id"] for r in mine]


def test_usage_by_day_and_model_and_top_keys(db: Database) -> None:
    _, alice, bob = _seed(db)
    start, days = days_back(30, NOW)
    assert days[-1] == "2026-03-10" and len(days) == 30 and start == datetime(2026, 2, 9, tzinfo=UTC)
    with db.engine.connect() as conn:
        daily = daily_usage(conn, GenerationFilter(since=start))
        today = {r["model"]: r for r in daily if r["day"] == "2026-03-10"}
        assert today["m/a"]["requests"] == 3 and today["m/a"]["cost"] == "2.75"
        assert today["m/b"]["errors"] == 1 and today["m/b"]["reasoning_tokens"] == 3
        assert [r["day"] for r in daily] == ["2026-03-08", "2026-03-10", "2026-03-10"]  # the 40-day-old row is out
        top = usage_by_key(conn, GenerationFilter(since=start), limit=2)
        assert [(r["key_name"], r["cost"]) for r in top] == [("bob", "2"), ("alice", "1")]
        everyone = usage_by_key(conn, GenerationFilter(since=start), limit=10)
        assert everyone[-1]["key_label"] == "console-admin" and everyone[-1]["key_id"] is None
        assert alice not in str(everyone) and bob not in str(everyone)

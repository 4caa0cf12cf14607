"""Keys, money, credits and the ledger at the storage level, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import inspect, select, text

from qwen3_api.platform import credits, ledger
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.keys import KeyStore, hash_key
from qwen3_api.platform.ledger import GenerationRecord
from qwen3_api.platform.pricing import Usage, price, reservation
from qwen3_api.platform.tables import api_keys, from_units, generations, metadata, to_units


def test_migrations_create_the_tables_and_are_idempotent(db: Database) -> None:
    db.upgrade()  # second run is a no-op
    insp = inspect(db.engine)
    for table in metadata.sorted_tables:
        assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0003"


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # noqa: ANN001
    database = Database(f"sqlite:///{tmp_path / 'q.db'}")
    database.upgrade()
    with database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    database.dispose()


def test_created_key_is_stored_only_as_its_hash(db: Database) -> None:
    store = KeyStore(db)
    key, record = store.create("alice", credit=Decimal("2.5"), rpm=5, tpm=1000, models=["a", "b"])
    assert key.startswith("sk-") and len(key) > 40
    assert record.label == f"sk-…{key[-4:]}" and record.key_hash == hash_key(key)
    with db.engine.connect() as conn:
        row = conn.execute(select(api_keys)).mappings().one()
    assert key not in {str(v) for v in row.values()}
    assert key[3:20] not in " ".join(str(v) for v in row.values())
    assert record.credit == Decimal("2.5") and record.models == ["a", "b"] and record.rpm == 5
    assert store.find(key).id == record.id
    assert store.find(record.label).id == record.id
    assert store.find("alice").id == record.id
    assert store.find(str(record.id)).id == record.id
    assert store.find("sk-unknown") is None


def test_revoke_top_up_update_and_expiry(db: Database) -> None:
    store = KeyStore(db)
    _, rec = store.create("bob", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert rec.status() == "expired"
    assert store.top_up(rec.id, Decimal("1.25")).credit == Decimal("1.25")  # unlimited -> a limit of the top-up
    assert store.top_up(rec.id, Decimal("0.75")).credit == Decimal("2")
    assert store.update(rec.id, rpm=7, expires_at=None).status() == "active"
    assert store.revoke(rec.id).status() == "revoked"
    first = store.get(rec.id).revoked_at
    assert store.revoke(rec.id).revoked_at == first
    with pytest.raises(ValueError):
        store.top_up(rec.id, Decimal(0))
    with pytest.raises(ValueError):
        store.create("x", rpm=0)


def test_money_is_exact_through_the_database(db: Database) -> None:
    store = KeyStore(db)
    amount = Decimal("0.0000012") * 7 + Decimal("0.00000375") * 3
    _, rec = store.create("money", credit=amount)
    assert store.get(rec.id).credit == amount
    assert from_units(to_units(Decimal("123.4567890123"))) == Decimal("123.4567890123")


def test_prices_match_the_catalog_per_thousand_tokens() -> None:
    entry = Catalog.load().get("qwen/qwen3-30b-a3b")
    assert price(entry, Usage(prompt_tokens=1000, completion_tokens=1000)) == Decimal("0.00495")
    assert price(entry, Usage(prompt_tokens=7, completion_tokens=3)) == Decimal("0.00001965")
    assert reservation(entry, 100, 200) == Decimal("0.00087")
    assert isinstance(price(entry, Usage(1, 1)), Decimal)


def test_reserve_is_conditional_and_charge_moves_reservation_to_spend(db: Database) -> None:
    store = KeyStore(db)
    _, rec = store.create("c", credit=Decimal("1"))
    assert db.run_sync(lambda c: credits.reserve(c, rec.id, Decimal("0.6")))
    assert not db.run_sync(lambda c: credits.reserve(c, rec.id, Decimal("0.5")))  # only 0.4 left
    assert db.run_sync(lambda c: credits.reserve(c, rec.id, Decimal("0.4")))
    assert store.get(rec.id).credit_left == 0
    db.run_sync(lambda c: credits.charge(c, rec.id, Decimal("0.1"), Decimal("0.6")))
    db.run_sync(lambda c: credits.release(c, rec.id, Decimal("0.4")))
    after = store.get(rec.id)
    assert (after.spent, after.reserved, after.credit_left) == (Decimal("0.1"), 0, Decimal("0.9"))
    _, unlimited = store.create("u")
    assert not db.run_sync(lambda c: credits.reserve(c, unlimited.id, Decimal("0.1")))  # no limit: no holds


def _row(gen_id: str, key_hash: str, model: str, cost: str, when: datetime) -> GenerationRecord:
    return GenerationRecord(id=gen_id, key_hash=key_hash, model=model, prompt_tokens=10, cached_tokens=2,
                            completion_tokens=5, reasoning_tokens=1, cost=Decimal(cost), currency="CNY",
                            status="completed", streamed=False, ttft_s=0.01, duration_s=0.1, created_at=when)


def test_ledger_rows_and_usage_report(db: Database) -> None:
    store = KeyStore(db)
    _, a = store.create("a")
    _, b = store.create("b")
    day1 = datetime(2026, 1, 1, 23, 30, tzinfo=UTC)
    day2 = datetime(2026, 1, 2, 0, 30, tzinfo=UTC)
    rows = [_row("g1", a.key_hash, "m1", "0.1", day1), _row("g2", a.key_hash, "m2", "0.2", day2),
            _row("g3", b.key_hash, "m1", "0.0000001", day2)]
    for r in rows:
        db.run_sync(lambda c, r=r: ledger.insert_generation(c, r))
    got = db.run_sync(lambda c: ledger.get_generation(c, "g1"))
    assert got.cost == Decimal("0.1") and got.created_at == day1 and got.cached_tokens == 2
    by_day = db.run_sync(lambda c: ledger.usage_report(c, by="day"))
    assert [(r["group"], r["requests"], r["cost"]) for r in by_day] == [
        ("2026-01-01", 1, Decimal("0.1")), ("2026-01-02", 2, Decimal("0.2000001"))]
    by_model = db.run_sync(lambda c: ledger.usage_report(c, by="model", key_hash=a.key_hash))
    assert [(r["group"], r["prompt_tokens"], r["completion_tokens"]) for r in by_model] == [("m1", 10, 5), ("m2", 10, 5)]
    by_key = db.run_sync(lambda c: ledger.usage_report(c, by="key", since=day2))
    assert {r["group"]: r["cost"] for r in by_key} == {
        f"{a.label} a": Decimal("0.2"), f"{b.label} b": Decimal("0.0000001")}
    with db.engine.connect() as conn:
        assert conn.execute(select(generations.c.cost).where(generations.c.id == "g3")).scalar_one() == Decimal("1E-7")

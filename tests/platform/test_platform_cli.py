"""`qwen3-api keys ...` and `qwen3-api usage` against both databases, plus the catalog and serve options."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from qwen3_api.errors import StartupError
from qwen3_api.platform import cli, ledger
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database, default_database_url
from qwen3_api.platform.factory import build_gateway
from qwen3_api.platform.gateway import Gateway, NoAuthGateway
from qwen3_api.platform.keys import KeyStore, hash_key
from qwen3_api.platform.ledger import GenerationRecord
from qwen3_api.platform.options import add_cli_args
from qwen3_api.platform.ratelimit import RedisRateLimiter


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    parser = argparse.ArgumentParser(prog="qwen3-api")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_keys_commands(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = run(capsys, "keys", "create", "--name", "alice", "--credit", "2.5", "--rpm", "60", "--tpm", "10000",
              "--models", "qwen/qwen3-30b-a3b,x/y", "--expires", "2031-01-02", "--database-url", db_url).strip()
    assert key.startswith("sk-") and len(key) > 40
    listing = run(capsys, "keys", "list", "--database-url", db_url)
    assert f"sk-…{key[-4:]}" in listing and key not in listing and "alice" in listing and "2.5" in listing
    shown = run(capsys, "keys", "show", "alice", "--database-url", db_url)
    assert "2031-01-02" in shown and "qwen/qwen3-30b-a3b,x/y" in shown and key not in shown
    assert '"credit": "4"' in run(capsys, "keys", "top-up", key, "1.5", "--json", "--database-url", db_url)
    assert '"status": "revoked"' in run(capsys, "keys", "revoke", "1", "--json", "--database-url", db_url)
    from qwen3_api.platform import credits

    db = Database(db_url)
    db.run_sync(lambda c: credits.reserve(c, 1, Decimal("1.5")))  # a lease stranded by a killed replica
    assert KeyStore(db).get(1).credit_left == Decimal("2.5")
    assert '"reserved": "0"' in run(capsys, "keys", "reset-reserved", "alice", "--json", "--database-url", db_url)
    assert KeyStore(db).get(1).credit_left == Decimal("4")
    db.dispose()
    store = KeyStore(Database(db_url))
    record = store.find(key)
    assert record.key_hash == hash_key(key) and record.status() == "revoked" and record.tpm == 10000
    with pytest.raises(SystemExit, match="no key matches"):
        run(capsys, "keys", "show", "nobody", "--database-url", db_url)
    with pytest.raises(SystemExit):
        run(capsys, "keys", "create", "--name", "bad", "--rpm", "0", "--database-url", db_url)


def test_usage_table(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = Database(db_url)
    db.upgrade()
    store = KeyStore(db)
    key_a, a = store.create("team-a")
    _, b = store.create("team-b")
    for i, (rec, model, day) in enumerate([(a, "m1", 1), (a, "m1", 2), (b, "m2", 2)]):
        row = GenerationRecord(id=f"g{i}", key_hash=rec.key_hash, model=model, prompt_tokens=100, cached_tokens=0,
                               completion_tokens=10, reasoning_tokens=0, cost=Decimal("0.000158"), currency="CNY",
                               status="completed", streamed=True, ttft_s=0.1, duration_s=1.0,
                               created_at=datetime(2026, 3, day, 12, tzinfo=UTC))
        db.run_sync(lambda c, row=row: ledger.insert_generation(c, row))
    by_day = run(capsys, "usage", "--database-url", db_url)
    assert "2026-03-01" in by_day and "2026-03-02" in by_day and "0.000474 CNY" in by_day  # the total row
    by_model = run(capsys, "usage", "--by", "model", "--since", "2026-03-02", "--database-url", db_url)
    assert "m1" in by_model and "m2" in by_model and "0.000316 CNY" in by_model and "2026-03-01" not in by_model
    by_key = run(capsys, "usage", "--by", "key", "--key", key_a, "--database-url", db_url)
    assert "team-a" in by_key and "team-b" not in by_key and "200" in by_key
    assert "no usage" in run(capsys, "usage", "--since", "2030-01-01", "--database-url", db_url)
    db.dispose()


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("QWEN3_API_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QWEN3_API_DATABASE_URL", raising=False)
    assert default_database_url() == f"sqlite:///{tmp_path / 'home' / 'qwen3-api.db'}"


def test_build_gateway_from_serve_options(tmp_path, redis_url: str) -> None:  # noqa: ANN001
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    gw = build_gateway(parser.parse_args(["--database-url", url]))
    assert type(gw) is Gateway and gw.requires_auth and gw.keys.list() == []
    assert isinstance(build_gateway(parser.parse_args(["--database-url", url, "--no-auth"])), NoAuthGateway)
    shared = build_gateway(parser.parse_args(["--database-url", url, "--redis-url", redis_url]))
    assert isinstance(shared.limiter, RedisRateLimiter)
    with pytest.raises(StartupError, match="cannot reach Redis"):
        build_gateway(parser.parse_args(["--database-url", url, "--redis-url", "redis://127.0.0.1:1/0"]))


def test_catalog_loads_toml_and_yaml(tmp_path) -> None:  # noqa: ANN001
    default = Catalog.load()
    assert default.get("qwen/qwen3-30b-a3b").prompt_price == Decimal("0.0012")
    yml = tmp_path / "c.yaml"
    yml.write_text("models:\n  - id: a/b\n    prompt_price_per_1k: '0.5'\n    completion_price_per_1k: 1.25\n"
                   "    base_url: http://127.0.0.1:9/v1\n    api_key_env: UPSTREAM_KEY\n")
    entry = Catalog.load(yml).get("a/b")
    assert entry.completion_price == Decimal("1.25") and entry.is_upstream and entry.currency == "CNY"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - id: x\n    price: 1\n")
    with pytest.raises(ValueError, match="unknown fields"):
        Catalog.load(bad)

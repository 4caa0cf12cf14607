"""Key fields the database cannot hold (amounts past BIGINT, NUL in a name...) are 400s / ValueErrors, never a
500: through the real app's admin API, KeyStore and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from qwen3_api.api.app import Settings, create_app
from qwen3_api.platform import cli
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.keys import KeyStore
from qwen3_api.platform.tables import MAX_MONEY
from tests.api.helpers import ScriptedEngine

ADMIN = {"Authorization": "Bearer adm"}
TOP = "922337203.6854775807"  # the largest credit: 2**63 - 1 units of 1e-10


@pytest.fixture
def admin(db: Database, qwen3_tokenizer_dir: Path) -> Iterator[TestClient]:
    app = create_app(ScriptedEngine(lambda *a: [1]), Catalog.load(), Gateway(db, admin_key="adm"),
                     Settings(model_path=str(qwen3_tokenizer_dir)))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _error(r: Any, param: str) -> str:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"] == param, err
    return err["message"]


def _raw(client: TestClient, method: str, path: str, body: str) -> Any:
    return client.request(method, path, content=body.encode(), headers={**ADMIN, "content-type": "application/json"})


def _credit_column(db: Database, key_id: int) -> tuple[Any, str]:
    """The stored credit as the database holds it, and its type (an overflowing SQLite sum becomes a REAL)."""
    kind = "typeof(credit)" if db.is_sqlite else "pg_typeof(credit)::text"
    with db.engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT credit, {kind} FROM api_keys WHERE id = :i"), {"i": key_id}).one())


@pytest.mark.parametrize("credit", ['"1e400"', "1e400", '"NaN"', '"Infinity"', '"-Infinity"', "-1", '"922337204"',
                                    '"922337203.68547758071"'])
def test_credit_out_of_range_is_400(admin: TestClient, credit: str) -> None:
    _error(_raw(admin, "POST", "/admin/keys", f'{{"name": "k", "credit": {credit}}}'), "credit")
    assert admin.get("/admin/keys", headers=ADMIN).json()["data"] == []


def test_largest_credit_fits_and_a_top_up_past_it_is_refused(admin: TestClient, db: Database) -> None:
    made = admin.post("/admin/keys", json={"name": "rich", "credit": TOP}, headers=ADMIN)
    assert made.status_code == 201 and made.json()["data"]["credit"] == TOP
    kid = made.json()["data"]["id"]
    message = _error(admin.post(f"/admin/keys/{kid}/top-up", json={"amount": "0.0000000001"}, headers=ADMIN),
                     "amount")
    assert TOP in message
    assert _credit_column(db, kid) == (2**63 - 1, "integer" if db.is_sqlite else "bigint")
    _error(admin.post(f"/admin/keys/{kid}/top-up", json={"amount": "1e400"}, headers=ADMIN), "amount")
    _error(admin.patch(f"/admin/keys/{kid}", json={"credit": "1e30"}, headers=ADMIN), "credit")


def test_top_up_to_exactly_the_largest_credit_then_no_further(admin: TestClient, db: Database) -> None:
    # The unlimited key's first top-up sets credit = spent + amount: the same range check applies.
    kid = admin.post("/admin/keys", json={"name": "open"}, headers=ADMIN).json()["data"]["id"]
    r = admin.post(f"/admin/keys/{kid}/top-up", json={"amount": "922337203"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["data"]["credit"] == "922337203"
    r = admin.post(f"/admin/keys/{kid}/top-up", json={"amount": "0.6854775807"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["data"]["credit"] == TOP
    _error(admin.post(f"/admin/keys/{kid}/top-up", json={"amount": "1"}, headers=ADMIN), "amount")
    assert _credit_column(db, kid)[0] == 2**63 - 1


@pytest.mark.parametrize(("body", "param"), [
    ('{"name": "a\\u0000b"}', "name"),       # PostgreSQL refuses NUL in text: was a 500
    ('{"name": "a\\ud800b"}', "name"),       # a lone surrogate: no UTF-8 form (the app's text guard)
    ('{"name": "tab\\there"}', "name"),
    ('{"name": "\\u0085"}', "name"),
    ('{"name": "   "}', "name"),             # KeyStore's blank-name ValueError: was a 500
    ('{"name": "' + "x" * 201 + '"}', "name"),
    ('{"name": "k", "rpm": 2147483648}', "rpm"),   # a 32-bit column on PostgreSQL
    ('{"name": "k", "tpm": 99999999999999999999999}', "tpm"),
    ('{"name": "k", "models": ["a,b"]}', "models[0]"),
    ('{"name": "k", "models": ["ok", "nul\\u0000"]}', "models[1]"),
    ('{"name": "k", "expires_at": "9999-12-31T23:59:59-14:00"}', "expires_at"),  # past year 9999 in UTC
])
def test_fields_no_column_holds_are_400(admin: TestClient, body: str, param: str) -> None:
    _error(_raw(admin, "POST", "/admin/keys", body), param)


def test_update_and_key_ids_out_of_range(admin: TestClient) -> None:
    kid = admin.post("/admin/keys", json={"name": "k"}, headers=ADMIN).json()["data"]["id"]
    _error(admin.patch(f"/admin/keys/{kid}", json={"name": None}, headers=ADMIN), "name")  # NOT NULL column
    _error(_raw(admin, "PATCH", f"/admin/keys/{kid}", '{"name": "x\\u0000"}'), "name")
    _error(admin.patch(f"/admin/keys/{kid}", json={"rpm": 2**31}, headers=ADMIN), "rpm")
    huge = 10**20  # past what SQLite can even bind
    _error(admin.get(f"/admin/keys/{huge}", headers=ADMIN), "key_id")
    _error(admin.post(f"/admin/keys/{huge}/top-up", json={"amount": "1"}, headers=ADMIN), "key_id")
    _error(admin.delete(f"/admin/keys/{huge}", headers=ADMIN), "key_id")
    _error(admin.get("/admin/usage", params={"key_id": huge}, headers=ADMIN), "key_id")
    assert admin.get(f"/admin/keys/{kid}", headers=ADMIN).json()["data"]["name"] == "k"


def test_keystore_raises_value_errors(db: Database) -> None:
    store = KeyStore(db)
    for kwargs in ({"credit": Decimal("1e400")}, {"credit": Decimal("NaN")}, {"credit": Decimal("-1")},
                   {"rpm": 2**31}, {"models": ["a,b"]},
                   {"expires_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2)))}):
        with pytest.raises(ValueError):
            store.create("k", **kwargs)
    for name in ("nul\x00", "bell\x07", "\ud800", "  "):
        with pytest.raises(ValueError, match="name"):
            store.create(name)
    assert store.list() == []
    _, record = store.create("k", credit=MAX_MONEY - 1)
    with pytest.raises(ValueError, match="largest amount"):
        store.top_up(record.id, Decimal(2))
    with pytest.raises(ValueError):
        store.top_up(record.id, Decimal("Infinity"))
    assert store.get(record.id).credit == MAX_MONEY - 1
    assert store.top_up(record.id, Decimal(1)).credit == MAX_MONEY
    with pytest.raises(ValueError, match="name"):
        store.update(record.id, name="a\x00")
    assert store.get(10**20) is None and store.find(str(10**20)) is None
    when = datetime(2031, 1, 1, tzinfo=UTC)
    assert store.update(record.id, expires_at=when).expires_at == when


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="qwen3-api")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_refuses_amounts_and_names_with_a_clear_message(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for credit in ("1e400", "922337204", "NaN", "-1"):
        with pytest.raises(SystemExit) as exit_:
            _cli("keys", "create", "--name", "k", "--credit", credit, "--database-url", db_url)
        assert exit_.value.code == 2  # argparse's usage error, naming the option
        assert "--credit" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        _cli("keys", "create", "--name", "k", "--rpm", str(2**31), "--database-url", db_url)
    assert exit_.value.code == 2 and "2147483647" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="error: .*control characters"):
        _cli("keys", "create", "--name", "a\x00b", "--database-url", db_url)
    with pytest.raises(SystemExit, match="error: .*out of range"):
        _cli("keys", "create", "--name", "k", "--expires", "9999-12-31T23:59:59-14:00", "--database-url", db_url)
    assert _cli("keys", "create", "--name", "k", "--credit", TOP, "--json", "--database-url", db_url) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit, match=f"error: .*{TOP}"):
        _cli("keys", "top-up", "k", "1", "--database-url", db_url)
    with pytest.raises(SystemExit) as exit_:
        _cli("keys", "top-up", "k", "1e400", "--database-url", db_url)
    assert exit_.value.code == 2 and TOP in capsys.readouterr().err
    database = Database(db_url)
    try:
        assert KeyStore(database).find("k").credit == MAX_MONEY
    finally:
        database.dispose()

"""Creating a key: names unique among live keys (store, CLI, admin API), and the one-time secret hard to miss."""

from __future__ import annotations

import argparse
import json

import pytest
from fastapi.testclient import TestClient

from qwen3_api.platform import cli
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.keys import DuplicateKeyNameError, KeyStore
from tests.platform.helpers import catalog, make_app

ADMIN = "admin-secret-for-tests"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    parser = argparse.ArgumentParser(prog="qwen3-api")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    assert args.func(args) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_a_live_name_is_refused_unless_allowed_and_a_revoked_one_is_free(db: Database) -> None:
    store = KeyStore(db)
    _, first = store.create("ci")
    with pytest.raises(DuplicateKeyNameError, match=rf"'ci' already exists \(id {first.id}, sk-…"):
        store.create("ci")
    _, twin = store.create("ci", allow_duplicate_name=True)
    assert twin.name == "ci" and twin.id != first.id
    store.revoke(first.id)
    store.revoke(twin.id)
    _, again = store.create("ci")  # every "ci" is revoked: the name is free
    assert again.status() == "active"


def test_cli_refuses_a_taken_name_clearly(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "keys", "create", "--name", "ops", "--database-url", db_url)
    with pytest.raises(SystemExit, match="'ops' already exists.*--allow-duplicate-name"):
        run(capsys, "keys", "create", "--name", "ops", "--database-url", db_url)
    out, _ = run(capsys, "keys", "create", "--name", "ops", "--allow-duplicate-name", "--json",
                 "--database-url", db_url)
    made = json.loads(out)
    assert made["key"].startswith("sk-") and made["data"]["name"] == "ops" and made["data"]["id"] == 2


def test_admin_api_answers_409_for_a_taken_name(db: Database) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(make_app(Gateway(db, admin_key=ADMIN), catalog())) as client:
        assert client.post("/admin/keys", json={"name": "svc"}, headers=admin).status_code == 201
        taken = client.post("/admin/keys", json={"name": "svc"}, headers=admin)
        assert taken.status_code == 409
        error = taken.json()["error"]
        assert (error["code"], error["param"], error["type"]) == ("duplicate_key_name", "name",
                                                                   "invalid_request_error")
        assert "allow_duplicate_name" in error["message"]
        twin = client.post("/admin/keys", json={"name": "svc", "allow_duplicate_name": True}, headers=admin)
        assert twin.status_code == 201 and twin.json()["data"]["name"] == "svc"
        # Renaming onto a live key's name is refused the same way; renaming a key to its own name is not.
        other = client.post("/admin/keys", json={"name": "batch"}, headers=admin).json()["data"]["id"]
        renamed = client.patch(f"/admin/keys/{other}", json={"name": "svc"}, headers=admin)
        assert renamed.status_code == 409 and renamed.json()["error"]["code"] == "duplicate_key_name"
        assert client.patch(f"/admin/keys/{other}", json={"name": "batch"}, headers=admin).status_code == 200
        forced = client.patch(f"/admin/keys/{other}", json={"name": "svc", "allow_duplicate_name": True},
                              headers=admin)
        assert forced.status_code == 200 and forced.json()["data"]["name"] == "svc"


def test_piped_stdout_is_the_key_alone(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    out, err = run(capsys, "keys", "create", "--name", "pipe", "--database-url", f"sqlite:///{tmp_path / 'k.db'}")
    assert out.count("\n") == 1 and out.startswith("sk-") and len(out.strip()) > 40  # KEY=$(...) works
    assert "only time it is shown" in err and out.strip() not in err


def test_on_a_terminal_the_key_comes_last_in_a_framed_block(tmp_path, capsys: pytest.CaptureFixture[str],  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    out, _ = run(capsys, "keys", "create", "--name", "tty", "--database-url", f"sqlite:///{tmp_path / 'k.db'}")
    lines = out.strip().splitlines()
    [key] = [ln.strip() for ln in lines if ln.strip().startswith("sk-") and "…" not in ln]
    assert lines[0] == lines[-1] == "=" * 72  # the block is the last thing printed
    assert "NEW API KEY for 'tty'" in out and "only this once" in out
    assert KeyStore(Database(f"sqlite:///{tmp_path / 'k.db'}")).find(key).name == "tty"

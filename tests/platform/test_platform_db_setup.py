"""Opening the database: where a SQLite file may be created, what a bad URL says, and a quiet migration log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qwen3_api.errors import StartupError
from qwen3_api.platform.db import Database


def test_only_the_default_location_gets_its_folder_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3_API_HOME", str(tmp_path / "home" / "deeper"))
    monkeypatch.delenv("QWEN3_API_DATABASE_URL", raising=False)
    Database().dispose()
    assert (tmp_path / "home" / "deeper").is_dir()
    with pytest.raises(StartupError, match="typo does not exist"):
        Database(f"sqlite:///{tmp_path / 'typo' / 'q.db'}")
    assert not (tmp_path / "typo").exists()


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    db = Database("postgresql+psycopg://me:s3cret@127.0.0.1:1/db")
    with pytest.raises(StartupError) as info:
        db.upgrade()
    message = str(info.value)
    assert "\n" not in message and "s3cret" not in message and "Connection refused" in message
    assert "sqlalche.me" not in message  # the driver's reason, not SQLAlchemy's wrapper


def test_migrations_log_nothing_at_info_and_show_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    Database(f"sqlite:///{tmp_path / 'a.db'}").upgrade()
    assert not [r for r in caplog.records if r.name.startswith("alembic")]
    caplog.set_level(logging.DEBUG)
    Database(f"sqlite:///{tmp_path / 'b.db'}").upgrade()
    assert any(r.name.startswith("alembic") and "upgrade" in r.getMessage() for r in caplog.records)

"""Platform fixtures: every database test runs on SQLite and, when reachable, on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qwen3_api.platform.db import Database
from tests.platform.helpers import (
    PG_URL,
    REDIS_URL,
    postgres_reachable,
    postgres_schema,
    redis_reachable,
    unreachable,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # noqa: ANN001
    """A fresh, empty database URL: a SQLite file, or a PostgreSQL schema dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'platform.db'}"
        return
    if not postgres_reachable():
        unreachable(f"PostgreSQL not reachable at {PG_URL}")
    with postgres_schema("qwen3_test") as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database."""
    database = Database(db_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def redis_url() -> str:
    if not redis_reachable():
        unreachable(f"Redis not reachable at {REDIS_URL}")
    return REDIS_URL

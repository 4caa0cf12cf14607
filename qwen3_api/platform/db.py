"""The platform database: a SQLAlchemy engine for SQLite (default, WAL) or PostgreSQL, migrated by Alembic.

The request path never talks to the database from the event loop: callers run the (short, synchronous)
statements through ``Database.run`` in a worker thread, so one slow write never stalls token streaming.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")
T = TypeVar("T")


def data_dir() -> Path:
    """Where the default SQLite file lives: $QWEN3_API_HOME or ~/.local/share/qwen3-api."""
    env = os.environ.get("QWEN3_API_HOME")
    return Path(env) if env else Path.home() / ".local" / "share" / "qwen3-api"


def default_database_url() -> str:
    """$QWEN3_API_DATABASE_URL, else a SQLite file in the data directory."""
    return os.environ.get("QWEN3_API_DATABASE_URL") or f"sqlite:///{data_dir() / 'qwen3-api.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes in WAL mode.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Database:
    """One SQLAlchemy engine plus the schema migration step. ``schema`` isolates a PostgreSQL run."""

    def __init__(self, url: str | None = None, *, schema: str | None = None) -> None:
        self.url = url or default_database_url()
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        elif self.dialect == "postgresql":
            kwargs.update(pool_size=20, max_overflow=20, pool_pre_ping=True)
            if schema:
                kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent; safe with several replicas on PostgreSQL)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Replicas starting together must not race to create the same tables.
                conn.execute(text("SELECT pg_advisory_xact_lock(7305510231)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction, committed when it returns."""
        with self.engine.begin() as conn:
            return fn(conn)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``run_sync`` in a worker thread, so the event loop keeps serving streams."""
        return await asyncio.to_thread(self.run_sync, fn)

    def dispose(self) -> None:
        self.engine.dispose()

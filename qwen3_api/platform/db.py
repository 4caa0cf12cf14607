"""The platform database: a SQLAlchemy engine for SQLite (default, WAL) or PostgreSQL, migrated by Alembic.

The request path never talks to the database from the event loop: callers run the (short, synchronous)
statements through ``Database.run`` in a worker thread, so one slow write never stalls token streaming.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from qwen3_api.errors import StartupError

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


_URL_HINT = "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"


def _one_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with its background link), on one line."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())


def _sqlite_folder(database: str) -> None:
    """Create the default location's folder; an explicit path in a missing folder is the operator's typo."""
    parent = Path(database).expanduser().resolve().parent
    if parent.is_dir():
        return
    if parent == data_dir().expanduser().resolve():
        parent.mkdir(parents=True, exist_ok=True)
        return
    raise StartupError(f"database sqlite:///{database}: the folder {parent} does not exist "
                       "(create it first, or leave --database-url out to use the default location)")


class Database:
    """One SQLAlchemy engine plus the schema migration step. ``schema`` isolates a PostgreSQL run.

    A URL that cannot work (unparsable, unknown dialect, driver missing, SQLite folder missing) raises
    :class:`StartupError` here; an unreachable server does so from :meth:`upgrade`.
    """

    def __init__(self, url: str | None = None, *, schema: str | None = None) -> None:
        self.url = url or default_database_url()
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise StartupError(f"database {self.url!r} is not a database URL ({_URL_HINT})") from None
        self.shown_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                _sqlite_folder(parsed.database)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        elif self.dialect == "postgresql":
            kwargs.update(pool_size=20, max_overflow=20, pool_pre_ping=True)
            # An unroutable host would otherwise hang start-up for the OS's TCP timeout (minutes).
            kwargs["connect_args"] = {"connect_timeout": 10}
            if schema:
                kwargs["connect_args"]["options"] = f"-csearch_path={schema}"
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except NoSuchModuleError:
            raise StartupError(f"database {self.shown_url}: unknown database kind {parsed.drivername!r} "
                               f"({_URL_HINT})") from None
        except ImportError as exc:
            raise StartupError(f"database {self.shown_url}: its driver is not installed ({exc})") from None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent; safe with several replicas on PostgreSQL).

        The first connection happens here: an unreachable or refusing database raises :class:`StartupError`.
        """
        # Alembic announces its plugins (on import) and each migration step at INFO: noise in a server's INFO
        # log and around a new key. Set before the import; --log-level debug (root at DEBUG) shows them.
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)
        logging.getLogger("alembic").setLevel(logging.NOTSET if debug else logging.WARNING)
        from alembic import command
        from alembic.config import Config
        from alembic.util import CommandError

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Replicas starting together must not race to create the same tables.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7305510231)"))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except (SQLAlchemyError, CommandError) as exc:
            raise StartupError(f"database {self.shown_url}: {_one_line(exc)}") from None

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction, committed when it returns."""
        with self.engine.begin() as conn:
            return fn(conn)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``run_sync`` in a worker thread, so the event loop keeps serving streams."""
        return await asyncio.to_thread(self.run_sync, fn)

    def dispose(self) -> None:
        self.engine.dispose()

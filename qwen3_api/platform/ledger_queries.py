"""Reading the ledger for people: filtered pages of generations, and usage by day and model or by key.

ledger.py writes the rows and keeps the CLI's reports; this module answers the admin API's and the console's
questions (a generations table with filters, the overview's charts). Every query is one SELECT over
``generations`` (outer-joined to ``api_keys`` for the key's id, label and name), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Connection, Select, case, func, select, type_coerce

from qwen3_api.platform.tables import api_keys, from_units, generations

g = generations.c
_TOKENS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")


@dataclass(slots=True)
class GenerationFilter:
    """Which ledger rows: every field left None matches everything. ``until`` is exclusive."""

    key_hash: str | None = None
    model: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    id: str | None = None  # a prefix of the generation id (ids are long; people paste the start)

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.key_hash is not None:
            query = query.where(g.key_hash == self.key_hash)
        if self.model is not None:
            query = query.where(g.model == self.model)
        if self.status is not None:
            query = query.where(g.status == self.status)
        if self.since is not None:
            query = query.where(g.created_at >= self.since.astimezone(UTC))
        if self.until is not None:
            query = query.where(g.created_at < self.until.astimezone(UTC))
        if self.id is not None:
            # A prefix match without LIKE's wildcards (an id may contain "_"): compare the leading substring.
            query = query.where(func.substr(g.id, 1, len(self.id)) == self.id)
        return query


def _who(key_label: str | None, key_hash: str) -> str:
    """A row's key as people know it: its label; a principal that is no stored key (the console's admin,
    --no-auth's anonymous) by its name. Never a real key's hash (64 hex digits)."""
    return key_label or (key_hash if len(key_hash) != 64 else "deleted key")


def _row(r: Any) -> dict[str, Any]:
    """A ledger row as the API shows it: money as a decimal string, the key by id / label / name, no hash."""
    created: datetime = r["created_at"]
    return {
        "id": r["id"], "created_at": created.isoformat(), "model": r["model"], "status": r["status"],
        "streamed": bool(r["streamed"]), "key_id": r["key_id"],
        "key_label": _who(r["key_label"], r["key_hash"]), "key_name": r["key_name"] or _who(None, r["key_hash"]), **{k: int(r[k]) for k in _TOKENS},
        "cost": format(r["cost"], "f"), "currency": r["currency"],
        "ttft_ms": None if r["ttft_s"] is None else round(r["ttft_s"] * 1000, 3),
        "duration_ms": round(r["duration_s"] * 1000, 3),
    }


def _select_rows() -> Select[Any]:
    return (select(generations, api_keys.c.id.label("key_id"), api_keys.c.label.label("key_label"),
                   api_keys.c.name.label("key_name"))
            .select_from(generations.outerjoin(api_keys, api_keys.c.key_hash == g.key_hash)))


def list_generations(conn: Connection, where: GenerationFilter, *, limit: int, offset: int
                     ) -> tuple[list[dict[str, Any]], int]:
    """One page of rows, newest first, and how many rows match in all."""
    page = where.apply(_select_rows()).order_by(g.created_at.desc(), g.id.desc()).limit(limit).offset(offset)
    rows = [_row(r) for r in conn.execute(page).mappings()]
    total = conn.execute(where.apply(select(func.count()).select_from(generations))).scalar_one()
    return rows, int(total)


def iter_generations(conn: Connection, where: GenerationFilter, *, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every matching row, newest first, read in batches (a CSV export of the whole ledger stays small)."""
    query = where.apply(_select_rows()).order_by(g.created_at.desc(), g.id.desc())
    result = conn.execution_options(yield_per=batch).execute(query).mappings()
    for r in result:
        yield _row(r)


def get_generation_row(conn: Connection, generation_id: str) -> dict[str, Any] | None:
    r = conn.execute(_select_rows().where(g.id == generation_id)).mappings().first()
    return _row(r) if r else None


def _day(conn: Connection) -> Any:
    # The UTC day as text: the leading 10 characters of SQLite's stored ISO text; to_char on PostgreSQL.
    if conn.dialect.name == "sqlite":
        return func.substr(g.created_at, 1, 10)
    return func.to_char(func.timezone("UTC", g.created_at), "YYYY-MM-DD")


def _sums() -> list[Any]:
    return [func.count().label("requests"),
            func.sum(case((g.status == "error", 1), else_=0)).label("errors"),
            func.sum(case((g.status == "cancelled", 1), else_=0)).label("cancelled"),
            *(func.sum(getattr(g, k)).label(k) for k in _TOKENS),
            type_coerce(func.sum(g.cost), BigInteger).label("cost"), func.min(g.currency).label("currency")]


def _totals(r: Any) -> dict[str, Any]:
    out = {k: int(r[k] or 0) for k in ("requests", "errors", "cancelled", *_TOKENS)}
    out["cost"] = format(from_units(int(r["cost"] or 0)), "f")
    out["currency"] = r["currency"]
    return out


def days_back(days: int, now: datetime | None = None) -> tuple[datetime, list[str]]:
    """The start (UTC midnight) of a window of ``days`` days ending today, and those days as YYYY-MM-DD."""
    today: date = (now or datetime.now(UTC)).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return start, [(first + timedelta(days=i)).isoformat() for i in range(days)]


def daily_usage(conn: Connection, where: GenerationFilter) -> list[dict[str, Any]]:
    """Requests (errors, cancellations), tokens and cost per UTC day and model, oldest day first."""
    day = _day(conn).label("day")
    query = where.apply(select(day, g.model, *_sums()).select_from(generations)).group_by(day, g.model)
    rows = [{"day": r["day"], "model": r["model"], **_totals(r)} for r in conn.execute(query).mappings()]
    return sorted(rows, key=lambda row: (row["day"], row["model"]))


def usage_by_key(conn: Connection, where: GenerationFilter, *, limit: int) -> list[dict[str, Any]]:
    """The keys that spent most (then used most tokens), with their id, label and name when the key exists."""
    cost = type_coerce(func.sum(g.cost), BigInteger)
    tokens = func.sum(g.prompt_tokens + g.completion_tokens)
    query = (where.apply(select(g.key_hash, func.min(api_keys.c.id).label("key_id"),
                                func.min(api_keys.c.label).label("key_label"),
                                func.min(api_keys.c.name).label("key_name"), *_sums())
                         .select_from(generations.outerjoin(api_keys, api_keys.c.key_hash == g.key_hash)))
             .group_by(g.key_hash).order_by(cost.desc(), tokens.desc(), g.key_hash).limit(limit))
    out = []
    for r in conn.execute(query).mappings():
        label = _who(r["key_label"], r["key_hash"])
        out.append({"key_id": r["key_id"], "key_label": label, "key_name": r["key_name"] or label, **_totals(r)})
    return out

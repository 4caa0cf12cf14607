"""The ledger: one row per generation, written once when it ends, plus the usage reports built on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Connection, func, select, type_coerce
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qwen3_api.platform.tables import api_keys, from_units, generations

STATUSES = ("completed", "cancelled", "error")


@dataclass(slots=True)
class GenerationRecord:
    """A ledger row: what one generation used, cost and how it ended."""

    id: str
    key_hash: str
    model: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost: Decimal
    currency: str
    status: str
    streamed: bool
    ttft_s: float | None
    duration_s: float
    created_at: datetime
    endpoint: str | None = None  # the route that made it (None: recorded before migration 0003)

    def to_dict(self) -> dict[str, Any]:
        """The `GET /v1/generation` body (OpenRouter-like names; never the key hash)."""
        return {
            "id": self.id, "model": self.model, "created_at": self.created_at.isoformat(),
            "status": self.status, "streamed": self.streamed, "endpoint": self.endpoint,
            "tokens_prompt": self.prompt_tokens, "tokens_cached": self.cached_tokens,
            "tokens_completion": self.completion_tokens, "tokens_reasoning": self.reasoning_tokens,
            "total_cost": format(self.cost, "f"), "currency": self.currency,
            "latency_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 3),
            "generation_time_ms": round(self.duration_s * 1000, 3),
        }


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    return status


def row_values(record: GenerationRecord) -> dict[str, Any]:
    """The column values of a row (status checked)."""
    check_status(record.status)
    return {
        "id": record.id, "key_hash": record.key_hash, "model": record.model,
        "prompt_tokens": record.prompt_tokens, "cached_tokens": record.cached_tokens,
        "completion_tokens": record.completion_tokens, "reasoning_tokens": record.reasoning_tokens,
        "cost": record.cost, "currency": record.currency, "status": record.status, "streamed": record.streamed,
        "ttft_s": record.ttft_s, "duration_s": record.duration_s, "created_at": record.created_at,
        "endpoint": record.endpoint,
    }


def insert_generations(conn: Connection, records: list[GenerationRecord]) -> set[str]:
    """Write rows in one multi-row INSERT; returns the ids written (an id already recorded is skipped)."""
    if not records:
        return set()
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT through SQLAlchemy.
    stmt = dialect_insert(generations).on_conflict_do_nothing(index_elements=["id"]).returning(generations.c.id)
    result = conn.execute(stmt, [row_values(r) for r in records])
    return {row[0] for row in result}


def insert_generation(conn: Connection, record: GenerationRecord) -> bool:
    """Write one row once: False (nothing written) when this generation id is already recorded."""
    return record.id in insert_generations(conn, [record])


def get_generation(conn: Connection, generation_id: str) -> GenerationRecord | None:
    row = conn.execute(select(generations).where(generations.c.id == generation_id)).mappings().first()
    return GenerationRecord(**dict(row)) if row else None


def usage_since(conn: Connection, key_hash: str, since: datetime) -> dict[str, Any]:
    """Requests, tokens and cost of one key since ``since`` (for the self-service key view)."""
    row = conn.execute(
        select(func.count(), func.coalesce(func.sum(generations.c.prompt_tokens), 0),
               func.coalesce(func.sum(generations.c.completion_tokens), 0),
               type_coerce(func.coalesce(func.sum(generations.c.cost), 0), BigInteger))
        .where(generations.c.key_hash == key_hash, generations.c.created_at >= since)
    ).one()
    return {"requests": int(row[0]), "prompt_tokens": int(row[1]), "completion_tokens": int(row[2]),
            "cost": format(from_units(int(row[3])), "f")}


GROUPINGS = ("day", "model", "key")


def usage_report(conn: Connection, *, key_hash: str | None = None, since: datetime | None = None,
                 by: str = "day") -> list[dict[str, Any]]:
    """Tokens and cost grouped by day, model or key (label), oldest / largest first."""
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {GROUPINGS}")
    g = generations.c
    if by == "day":
        # substr of the ISO text works on both databases and keeps the day in UTC (how it was stored).
        if conn.dialect.name == "sqlite":
            group = func.substr(g.created_at, 1, 10)
        else:
            group = func.to_char(func.timezone("UTC", g.created_at), "YYYY-MM-DD")
    elif by == "model":
        group = g.model
    else:
        group = func.coalesce(api_keys.c.label + " " + api_keys.c.name, g.key_hash)
    query = (
        select(group.label("group"), func.count().label("requests"),
               func.sum(g.prompt_tokens).label("prompt_tokens"), func.sum(g.cached_tokens).label("cached_tokens"),
               func.sum(g.completion_tokens).label("completion_tokens"),
               func.sum(g.reasoning_tokens).label("reasoning_tokens"), type_coerce(func.sum(g.cost), BigInteger).label("cost"),
               func.min(g.currency).label("currency"))
        .select_from(generations.outerjoin(api_keys, api_keys.c.key_hash == g.key_hash))
        .group_by(group).order_by(group)
    )
    if key_hash is not None:
        query = query.where(g.key_hash == key_hash)
    if since is not None:
        query = query.where(g.created_at >= since.astimezone(UTC))
    rows = []
    for r in conn.execute(query).mappings():
        row = dict(r)
        row["cost"] = from_units(int(row["cost"] or 0))
        for k in ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"):
            row[k] = int(row[k] or 0)
        rows.append(row)
    return rows

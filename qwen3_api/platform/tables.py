"""The platform's tables (SQLAlchemy Core): API keys, the per-generation ledger, replicas and their credit leases.

Money columns are integers counting 1e-10 of the currency (``Money``): SQLite has no exact decimal type,
and integer arithmetic keeps the credit check in SQL (``credit - spent - reserved >= :x``) exact on both
databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

MONEY_SCALE = Decimal(10) ** 10


def to_units(amount: Decimal) -> int:
    """Decimal currency -> integer units of 1e-10, rounded up so nothing is ever under-charged."""
    return int((Decimal(amount) * MONEY_SCALE).to_integral_value(rounding=ROUND_CEILING))


def from_units(units: int) -> Decimal:
    """Integer units of 1e-10 -> Decimal currency, without trailing zeros beyond the scale."""
    return (Decimal(units) / MONEY_SCALE).normalize() if units else Decimal(0)


# What the columns hold: a Money column is a BIGINT (SQLite INTEGER), an Integer one is 32-bit on PostgreSQL.
# Bigger values fail on PostgreSQL and, on SQLite, either fail or are silently turned into a REAL by arithmetic.
MAX_MONEY_UNITS = 2**63 - 1
MAX_MONEY = from_units(MAX_MONEY_UNITS)  # 922337203.6854775807 of the currency
MAX_INT = 2**31 - 1


class Money(TypeDecorator[Decimal]):
    """A Decimal amount stored exactly as a BIGINT of 1e-10 units."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | None, dialect: object) -> int | None:
        return None if value is None else to_units(Decimal(value))

    def process_result_value(self, value: int | None, dialect: object) -> Decimal | None:
        return None if value is None else from_units(int(value))

    def coerce_compared_value(self, op: object, value: object) -> Money:
        return self


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases (SQLite drops the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("label", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    # NULL credit = no credit limit; spent and reserved only ever move inside one UPDATE each.
    Column("credit", Money, nullable=True),
    Column("spent", Money, nullable=False, default=0),
    Column("reserved", Money, nullable=False, default=0),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("models", Text, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

generations = Table(
    "generations",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("key_hash", String(64), nullable=False, index=True),
    Column("model", String(200), nullable=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("cost", Money, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("streamed", Boolean, nullable=False),
    Column("ttft_s", Float, nullable=True),
    Column("duration_s", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
    # The route that made it (/v1/chat/completions, /v1/responses, /v1/messages ...); NULL for rows before 0003.
    Column("endpoint", String(64), nullable=True),
)

# Stored Responses API objects (store: true): the response as served, the input items it was given, and the
# whole conversation as items (earlier turns + input + output), so previous_response_id is one read.
responses = Table(
    "responses",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("key_hash", String(64), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
    Column("input_items", Text, nullable=False),
    Column("conversation", Text, nullable=False),
)

# A running server process (credits.CreditLeases): its heartbeat says it is alive, so its leases stay its own.
replicas = Table(
    "replicas",
    metadata,
    Column("id", String(64), primary_key=True),  # host:pid:random, new for every start (and after a reclaim)
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    # Seconds since the epoch by the database's clock (replicas.db_now), so hosts' clocks never disagree.
    Column("heartbeat", Float, nullable=False),
)

# One replica's share of one key's ``reserved``: per key, reserved == the sum of its lease amounts.
credit_leases = Table(
    "credit_leases",
    metadata,
    Column("replica_id", String(64), primary_key=True),
    Column("key_id", Integer, primary_key=True, index=True),
    Column("amount", Money, nullable=False, default=0),
)

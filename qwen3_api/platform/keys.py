"""API keys: generated once from ``secrets``, stored only as SHA-256, shown masked (``sk-…abcd``)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, case, insert, literal, select, update

from qwen3_api.platform.db import Database
from qwen3_api.platform.key_fields import KeyFieldError, check_amount, check_key_fields
from qwen3_api.platform.tables import (
    MAX_INT,
    MAX_MONEY,
    MAX_MONEY_UNITS,
    Money,
    api_keys,
    from_units,
    to_units,
)

KEY_PREFIX = "sk-"


class DuplicateKeyNameError(ValueError):
    """A key that is not revoked already has this name (names are how people find keys: keep them unique)."""


def generate_key() -> str:
    """A fresh secret key: ``sk-`` + 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The only form a key is ever stored or logged in."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mask_key(key: str) -> str:
    """The label listings show: enough to recognise a key, never enough to use it."""
    return f"{KEY_PREFIX}…{key[-4:]}"


@dataclass(slots=True)
class KeyRecord:
    """One stored key (never the secret itself)."""

    id: int
    key_hash: str
    label: str
    name: str
    credit: Decimal | None
    spent: Decimal
    reserved: Decimal
    rpm: int | None
    tpm: int | None
    models: list[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: RowMapping) -> KeyRecord:
        models = row["models"]
        return cls(
            id=row["id"], key_hash=row["key_hash"], label=row["label"], name=row["name"],
            credit=row["credit"], spent=row["spent"] or Decimal(0), reserved=row["reserved"] or Decimal(0),
            rpm=row["rpm"], tpm=row["tpm"], models=[m for m in models.split(",") if m] if models else None,
            expires_at=row["expires_at"], revoked_at=row["revoked_at"], created_at=row["created_at"],
        )

    @property
    def credit_left(self) -> Decimal | None:
        """Credit not yet spent nor held by running requests; None when the key has no credit limit."""
        return None if self.credit is None else self.credit - self.spent - self.reserved

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """The public view (admin API, `keys show --json`, self-service): label, never the hash or secret."""
        def money(v: Decimal | None) -> str | None:
            return None if v is None else format(v, "f")

        return {
            "id": self.id, "name": self.name, "label": self.label, "status": self.status(),
            "credit": money(self.credit), "spent": money(self.spent), "reserved": money(self.reserved),
            "credit_left": money(self.credit_left), "rpm": self.rpm, "tpm": self.tpm, "models": self.models,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "created_at": self.created_at.isoformat(),
        }


class KeyStore:
    """CRUD over ``api_keys``; synchronous (the CLI calls it directly, the gateway through a thread)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, *, credit: Decimal | None = None, rpm: int | None = None, tpm: int | None = None,
               models: list[str] | None = None, expires_at: datetime | None = None,
               allow_duplicate_name: bool = False) -> tuple[str, KeyRecord]:
        """Create a key; returns the secret (shown once, never stored) and its record.

        Raises :class:`DuplicateKeyNameError` when a non-revoked key has ``name``, unless ``allow_duplicate_name``.
        """
        _validate(name=name, credit=credit, rpm=rpm, tpm=tpm, models=models, expires_at=expires_at)
        key = generate_key()
        values = {
            "key_hash": hash_key(key), "label": mask_key(key), "name": name, "credit": credit,
            "spent": Decimal(0), "reserved": Decimal(0), "rpm": rpm, "tpm": tpm,
            "models": ",".join(models) if models else None, "expires_at": expires_at,
            "created_at": datetime.now(UTC),
        }
        with self.db.engine.begin() as conn:
            if not allow_duplicate_name:
                _check_name_free(conn, name)
            key_id = conn.execute(insert(api_keys).values(**values).returning(api_keys.c.id)).scalar_one()
        record = self.get(key_id)
        assert record is not None
        return key, record

    def get(self, key_id: int) -> KeyRecord | None:
        if not 0 <= key_id <= MAX_INT:  # no such id can exist; SQLite cannot even bind one past 2**63
            return None
        with self.db.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        return KeyRecord.from_row(row) if row else None

    def get_by_hash(self, key_hash: str, conn: Connection | None = None) -> KeyRecord | None:
        if conn is None:
            with self.db.engine.connect() as own:
                return self.get_by_hash(key_hash, own)
        row = conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)).mappings().first()
        return KeyRecord.from_row(row) if row else None

    def find(self, ref: str) -> KeyRecord | None:
        """A key by id, by its secret (``sk-…``), by label (``sk-…abcd``) or by name, when that is unambiguous."""
        ref = ref.strip()
        if ref.isdigit():
            return self.get(int(ref))
        if ref.startswith(KEY_PREFIX) and "…" not in ref:
            return self.get_by_hash(hash_key(ref))
        column = api_keys.c.label if "…" in ref else api_keys.c.name
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(api_keys).where(column == ref)).mappings().all()
        if len(rows) > 1:
            raise ValueError(f"{len(rows)} keys match {ref!r}; use the key id")
        return KeyRecord.from_row(rows[0]) if rows else None

    def list(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        query = select(api_keys).order_by(api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.db.engine.connect() as conn:
            return [KeyRecord.from_row(r) for r in conn.execute(query).mappings()]

    def revoke(self, key_id: int) -> KeyRecord | None:
        """Revoke a key for good (idempotent: the first revocation time is kept)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=datetime.now(UTC)))
        return self.get(key_id)

    def top_up(self, key_id: int, amount: Decimal) -> KeyRecord | None:
        """Add ``amount`` to a key's credit, atomically (a key without a limit gets one of ``amount`` above
        what it spent). A credit that would pass ``MAX_MONEY`` is refused (``KeyFieldError``), unchanged."""
        amount = check_amount(amount, "amount", positive=True)
        if self.get(key_id) is None:
            return None
        credit = api_keys.c.credit
        base = case((credit.is_(None), api_keys.c.spent), else_=credit)
        # The sum is checked in the same statement, against MAX - amount (which cannot overflow): two top-ups
        # racing cannot pass the column's range together, and SQLite never turns the sum into a REAL.
        room = literal(from_units(MAX_MONEY_UNITS - to_units(amount)), Money())
        with self.db.engine.begin() as conn:
            done = conn.execute(update(api_keys).where(api_keys.c.id == key_id, base <= room)
                                .values(credit=base + literal(amount, Money()))).rowcount
        if not done:
            raise KeyFieldError("amount", f"this top-up would take the key's credit past {MAX_MONEY}, the largest "
                                          "amount a key can hold")
        return self.get(key_id)

    def update(self, key_id: int, *, allow_duplicate_name: bool = False, **fields: Any) -> KeyRecord | None:
        """Change name / credit / rpm / tpm / models / expires_at (None clears a limit); a new name must not be
        another live key's (DuplicateKeyNameError) unless ``allow_duplicate_name``."""
        allowed = {"name", "credit", "rpm", "tpm", "models", "expires_at"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        _validate(**fields)
        if "models" in fields:
            fields["models"] = ",".join(fields["models"]) if fields["models"] else None
        if fields:
            with self.db.engine.begin() as conn:
                if "name" in fields and not allow_duplicate_name:
                    _check_name_free(conn, fields["name"], but=key_id)
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**fields))
        return self.get(key_id)


def _check_name_free(conn: Connection, name: str, but: int | None = None) -> None:
    """DuplicateKeyNameError when a non-revoked key (other than ``but``) is called ``name``."""
    query = select(api_keys.c.id, api_keys.c.label).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
    if but is not None:
        query = query.where(api_keys.c.id != but)
    taken = conn.execute(query).first()
    if taken is not None:
        raise DuplicateKeyNameError(f"a key named {name!r} already exists (id {taken.id}, {taken.label})")


def _validate(**fields: Any) -> None:
    # A KeyFieldError (a ValueError naming the field) for what no column can hold: see key_fields.
    check_key_fields(**fields)

"""Who is calling (``Principal``) and what an admitted request holds until it is settled (``Admission``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.keys import KeyRecord

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a stored key (by hash, never the secret) or the anonymous --no-auth user."""

    key_hash: str
    key_id: int | None
    name: str
    label: str
    rpm: int | None = None
    tpm: int | None = None
    models: frozenset[str] | None = None
    has_credit_limit: bool = False
    expires_at: datetime | None = None
    revoked: bool = False

    @property
    def anonymous(self) -> bool:
        return self.key_id is None

    @classmethod
    def from_record(cls, r: KeyRecord) -> Principal:
        return cls(key_hash=r.key_hash, key_id=r.id, name=r.name, label=r.label, rpm=r.rpm, tpm=r.tpm,
                   models=frozenset(r.models) if r.models else None, has_credit_limit=r.credit is not None,
                   expires_at=r.expires_at, revoked=r.revoked_at is not None)


ANONYMOUS_PRINCIPAL = Principal(key_hash=ANONYMOUS, key_id=None, name=ANONYMOUS, label=ANONYMOUS)


@dataclass(slots=True)
class Admission:
    """A request let in: what it holds (credit reservation, rate-limit entry) until ``settle``."""

    principal: Principal
    entry: CatalogEntry
    generation_id: str
    prompt_tokens: int
    max_tokens: int
    reserved: Decimal = Decimal(0)
    lease: Any = None  # the credits.Lease the reservation came from: settle gives the hold back to it
    headers: dict[str, str] = field(default_factory=dict)  # X-RateLimit-* for the response
    started: float = field(default_factory=time.monotonic)
    rate_limited: bool = False
    settled: bool = False
    cost: Decimal | None = None

    @property
    def currency(self) -> str:
        return self.entry.currency


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None

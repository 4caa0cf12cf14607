"""What a key's fields may hold: the ranges of their columns and text every database stores.

One set of checks for the admin API (as pydantic validators, so a bad value is a 400 naming the field), the
CLI and ``KeyStore`` (a ``ValueError`` for library users). Without them a credit above the BIGINT range, a
NUL in a name (PostgreSQL refuses it) or an expiry that cannot be turned into UTC fails inside the database
driver as a 500, and on SQLite an overflowing top-up is silently stored as a REAL.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from qwen3_api.platform.tables import MAX_INT, MAX_MONEY

MAX_NAME = 200  # the name column's length
# The JSON-schema form of check_name (published by the admin API): no control character, not blank.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
MODEL_PATTERN = r"^[^,\x00-\x1f\x7f-\x9f]*[^,\s\x00-\x1f\x7f-\x9f][^,\x00-\x1f\x7f-\x9f]*$"


class KeyFieldError(ValueError):
    """A key field no database column can hold; ``param`` names it (the admin API's 400 says which)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _bad_char(text: str) -> str | None:
    # Cc: NUL, the other C0/C1 controls and DEL; Cs: a lone surrogate (no UTF-8 form, so no column takes it).
    return next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)


def _text(value: Any, param: str, what: str) -> str:
    if not isinstance(value, str):
        raise KeyFieldError(param, f"{what} must be a string")
    bad = _bad_char(value)
    if bad is not None:
        raise KeyFieldError(param, f"{what} must not contain control characters or lone surrogates "
                                   f"(found U+{ord(bad):04X})")
    return value


def check_name(name: Any, param: str = "name") -> str:
    """A key name: 1 to 200 characters, not blank, no control characters (NUL included)."""
    if name is None:
        raise KeyFieldError(param, "a key needs a name (it cannot be cleared)")
    _text(name, param, "a key name")
    if not name.strip():
        raise KeyFieldError(param, "a key needs a non-empty name")
    if len(name) > MAX_NAME:
        raise KeyFieldError(param, f"a key name has at most {MAX_NAME} characters")
    return name


def check_amount(value: Any, param: str = "credit", *, positive: bool = False) -> Decimal:
    """An amount of money a key can hold: finite, >= 0 (> 0 if ``positive``), at most ``MAX_MONEY``."""
    try:
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise KeyFieldError(param, f"{param} must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise KeyFieldError(param, f"{param} must be a finite number")
    if positive and amount <= 0:
        raise KeyFieldError(param, f"{param} must be positive")
    if amount < 0:
        raise KeyFieldError(param, f"{param} must be >= 0")
    if amount > MAX_MONEY:
        raise KeyFieldError(param, f"{param} must be at most {MAX_MONEY} (the largest amount a key can hold)")
    return amount


def check_limit(value: Any, param: str) -> int:
    """A per-minute limit (rpm, tpm): a positive integer the 32-bit column holds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INT:
        raise KeyFieldError(param, f"{param} must be an integer from 1 to {MAX_INT}")
    return value


def check_models(models: Any, param: str = "models") -> list[str]:
    """Model ids a key may use: non-empty, without commas (the column is a comma-joined list) or controls."""
    if not isinstance(models, list):
        raise KeyFieldError(param, f"{param} must be a list of model ids")
    for i, model in enumerate(models):
        _text(model, f"{param}[{i}]", "a model id")
        if not model.strip() or "," in model:
            raise KeyFieldError(f"{param}[{i}]", "a model id must be non-empty and hold no comma")
    return models


def check_expiry(when: Any, param: str = "expires_at") -> datetime:
    """An expiry the database stores in UTC: a datetime (naive = UTC) that has a UTC form within year 1-9999."""
    if not isinstance(when, datetime):
        raise KeyFieldError(param, f"{param} must be a datetime")
    try:
        (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise KeyFieldError(param, f"{param} is out of range once converted to UTC") from None
    return when


def check_key_fields(**fields: Any) -> None:
    """Check whichever of name / credit / rpm / tpm / models / expires_at are given (None clears a limit)."""
    for param, value in fields.items():
        if param == "name":
            check_name(value)  # a name is never cleared: None is refused too
        elif value is None:
            continue
        elif param == "credit":
            check_amount(value, param)
        elif param in ("rpm", "tpm"):
            check_limit(value, param)
        elif param == "models":
            check_models(value)
        elif param == "expires_at":
            check_expiry(value)

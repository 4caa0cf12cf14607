"""Request bodies of the admin key API (/admin/keys): each field as its column can hold it.

The checks themselves live in platform/key_fields.py (KeyStore and the CLI use them too); these types publish
them in /openapi.json and turn a bad value into a 400 naming the field.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from qwen3_api.platform.key_fields import (
    MAX_NAME,
    MODEL_PATTERN,
    NAME_PATTERN,
    check_expiry,
    check_models,
    check_name,
)
from qwen3_api.platform.tables import MAX_INT, MAX_MONEY

# The fields as their columns hold them (key_fields): the published schema says so, a bad value is a 400 naming it.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, json_schema_extra={"pattern": NAME_PATTERN}),
                 AfterValidator(check_name)]
# pydantic would publish "any string" and a float maximum rounded above the column's range; these say less than
# the server takes (numbers up to MAX_MONEY; decimal strings below 1e8, at most 10 decimals), never more.
_NUMBER = {"type": "number", "maximum": float(MAX_MONEY.quantize(Decimal("1e-6"), ROUND_DOWN))}
Amount = Annotated[Decimal, Field(ge=0, le=MAX_MONEY), WithJsonSchema({
    "description": "in the catalog currency", "anyOf": [
        {**_NUMBER, "minimum": 0}, {"type": "string", "pattern": r"^[0-9]{1,8}(\.[0-9]{1,10})?$"}]})]
PositiveAmount = Annotated[Decimal, Field(gt=0, le=MAX_MONEY), WithJsonSchema({
    "description": "in the catalog currency", "anyOf": [
        {**_NUMBER, "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^(?=[0-9.]*[1-9])[0-9]{1,8}(\.[0-9]{1,10})?$"}]})]
Limit = Annotated[int, Field(gt=0, le=MAX_INT)]
ModelIds = list[Annotated[str, Field(min_length=1, json_schema_extra={"pattern": MODEL_PATTERN})]]
Expiry = Annotated[datetime, AfterValidator(check_expiry)]
KeyId = Annotated[int, Path(ge=1, le=MAX_INT)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    credit: Amount | None = Field(default=None, description="credit limit in the catalog currency")
    rpm: Limit | None = None
    tpm: Limit | None = None
    models: Annotated[ModelIds, AfterValidator(check_models)] | None = None
    expires_at: Expiry | None = None
    allow_duplicate_name: bool = Field(default=False, description="create it even if a live key has this name")


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(default=None)  # optional, but null is refused: a key always has a name
    credit: Amount | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    models: Annotated[ModelIds, AfterValidator(check_models)] | None = None
    expires_at: Expiry | None = None
    allow_duplicate_name: bool = Field(default=False, description="rename it even if a live key has the name")


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: PositiveAmount

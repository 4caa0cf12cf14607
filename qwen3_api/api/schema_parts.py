"""Pieces the dialects' request schemas share: lenient models, errors that name their field, list elements of
several shapes validated one by one so an error points at the element and field at fault."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from qwen3_api.api.errors import _is_type_tag as is_type_tag
from qwen3_api.api.errors import _most_telling as most_telling

_M = TypeVar("_M", bound=BaseModel)


class Lenient(BaseModel):
    """Unknown fields are accepted and ignored (clients send vendor extras), as on the chat route."""

    model_config = ConfigDict(extra="ignore")


class SamplingExtras(Lenient):
    """Sampling fields of the chat route that the Responses and Messages APIs do not have, taken as extensions
    (as vLLM takes them there): checked by the chat request they are passed to, under the same names."""

    seed: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def extras(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SamplingExtras.model_fields if getattr(self, name) is not None}


class FieldError(ValueError):
    """A check that knows which field is at fault (api/errors.py turns ``param`` into the error's param)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def validate_part(model: type[_M], value: Any, where: str) -> _M:
    """Validate one element of a polymorphic list; its first error names the field below ``where`` (a nested
    ValidationError would otherwise reach the client as one flat "value error" without a path)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        # The union member's error that got furthest, as the app's own handler picks it (api/errors.py).
        first = most_telling(exc.errors())
        ctx = (first.get("ctx") or {}).get("error")
        sub = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ()) if not is_type_tag(p))
        param = getattr(ctx, "param", None) or where + sub
        message = str(ctx) if ctx is not None else first.get("msg", "invalid value")
        if first.get("type") == "missing":
            message = f"missing required parameter '{param}'"
        raise FieldError(param, message) from None

"""The one place that turns exceptions into OpenAI-shaped error responses (never FastAPI's 422 body)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qwen3_api.errors import APIError

log = logging.getLogger(__name__)

_STATUS_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_credits",
    403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
    413: "invalid_request_error", 429: "rate_limit_error",
}


def error_response(err: APIError) -> JSONResponse:
    """The JSON response for ``err``, with its headers (Retry-After, X-RateLimit-*...)."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers or None)


_TYPE_TAGS = {"str", "int", "float", "bool", "NamedToolChoice", "TextPart", "none"}


def _is_type_tag(p: Any) -> bool:
    # pydantic adds the union member / validator to the error path ("str", "list[str]", "literal['a','b']",
    # "function-after[...]"); they mean nothing to a client.
    return isinstance(p, str) and (p in _TYPE_TAGS or p.startswith(("list[", "dict[", "literal[", "function-",
                                                                     "json-or-python[", "constrained-")))


def _param(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``"messages[0].role"``."""
    out = ""
    for p in loc:
        if p == "body" or _is_type_tag(p):
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def validation_error(exc: RequestValidationError) -> APIError:
    """The first pydantic error as a 400 naming the field at fault."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "Invalid request body.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request: "
                        f"{first.get('ctx', {}).get('error', 'invalid JSON')}.", code="invalid_json")
    ctx_err = (first.get("ctx") or {}).get("error")
    param = getattr(ctx_err, "param", None) or _param(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    msg = str(ctx_err) if ctx_err is not None else first.get("msg", "invalid value")
    if first.get("type") == "model_attributes_type" or first.get("type") == "dict_type" and not param:
        return APIError(400, "The request body must be a JSON object.", param=None)
    prefix = f"Invalid value for '{param}': " if param else "Invalid request: "
    return APIError(400, prefix + msg, param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise to an OpenAI-shaped body with the right status."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if status == 404:
            message = "Unknown request URL. Please check the URL and method."
        err = APIError(status, message, _STATUS_TYPES.get(status, "invalid_request_error"),
                       code="not_found" if status == 404 else None, headers=dict(exc.headers or {}))
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return error_response(APIError(500, "The server had an error while processing your request.",
                                       "server_error", code="internal_error"))

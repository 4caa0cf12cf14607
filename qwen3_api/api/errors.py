"""The one place that turns exceptions into OpenAI-shaped error responses (never FastAPI's 422 body)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def server_error() -> APIError:
    """The 500 a client sees for a bug of ours: no detail of what failed."""
    return APIError(500, "The server had an error while processing your request.", "server_error",
                    code="internal_error")


_TYPE_TAGS = {"str", "int", "float", "bool", "NamedToolChoice", "TextPart", "none"}


def _is_type_tag(p: Any) -> bool:
    # pydantic adds the union member / validator to the error path ("str", "list[str]", "literal['a','b']",
    # "function-after[...]"); they mean nothing to a client.
    return isinstance(p, str) and (p in _TYPE_TAGS or p.startswith(("list[", "dict[", "literal[", "function-",
                                                                     "json-or-python[", "constrained-")))


def format_param(path: tuple[Any, ...]) -> str | None:
    """``("messages", 0, "content")`` -> ``"messages[0].content"``; the empty path is None (the whole body)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _param(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``"messages[0].role"``; ``("path", "key_id")`` -> ``"key_id"``."""
    if loc and loc[0] in ("query", "path", "header", "cookie"):
        loc = loc[1:]
    return format_param(tuple(p for p in loc if p != "body" and not _is_type_tag(p)))


def _most_telling(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The first error, or for a union the member's error that got furthest into the value.

    ``prompt: [-1]`` fails every member of ``str | list[str] | list[int]``; "should be a valid string" (the
    first) says less than "prompt[0] should be >= 0" (the deepest, and not a mere type mismatch).
    """
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    tag = next((i for i, p in enumerate(loc) if _is_type_tag(p)), None)
    if tag is None:
        return first
    same_union = [e for e in errors if tuple(e.get("loc", ()))[:tag] == loc[:tag]
                  and len(e.get("loc", ())) > tag and _is_type_tag(e["loc"][tag])]
    return max(same_union, key=lambda e: (len([p for p in e["loc"] if not _is_type_tag(p)]),
                                          not str(e.get("type", "")).endswith("_type")))


def validation_error(exc: RequestValidationError) -> APIError:
    """The first pydantic error as a 400 naming the field at fault."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "Invalid request body.")
    first = _most_telling(errors)
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
        return error_response(server_error())


class KeepAliveOn500Middleware:
    """The outermost layer: an unhandled exception never costs a pooled client its keep-alive connection.

    Starlette's ServerErrorMiddleware sends the 500 (our handler above) and then re-raises, and uvicorn answers
    a re-raised exception by closing the socket without ``Connection: close``: the client pools the
    connection and loses its next request on it. Here an exception after a complete response is dropped (it
    is logged already), one before any response is answered with the OpenAI-shaped 500; only a response cut
    off half-way (a stream whose body raised) is re-raised, since closing is then the only way to end it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = finished = False

        async def tracked_send(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if started and not finished:
                raise
            if not started:
                log.exception("unhandled error before any response: %s", exc)
                await error_response(server_error())(scope, receive, send)

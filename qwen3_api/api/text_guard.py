"""Refuse request bodies whose JSON holds text that is not Unicode (lone UTF-16 surrogates), on every route.

JSON lets a client write ``"\\ud800"``, and Python's decoder (``surrogatepass``) also turns the raw bytes of an
encoded surrogate into one: the result is a ``str`` that nothing downstream can use (the tokenizer, UTF-8
encoding of a response or a database row all fail with a 500). One check where the body enters, before any
route sees it, answers every route present and future with a 400 naming the field instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3_api.api.errors import error_response, format_param
from qwen3_api.errors import APIError

# A body can only decode to a surrogate through a \uD800-\uDFFF escape or the bytes ED A0..BF: bodies without
# either (nearly all) are let through without being parsed here. Pairs match too; the parse sorts them out.
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def find_surrogate(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The path of the first string or object key in ``value`` holding a surrogate code point, and the point.

    Iterative, so a deeply nested body cannot exhaust the stack.
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            m = _SURROGATE.search(v)
            if m:
                return path, m.group()
        elif isinstance(v, dict):
            for k in v:
                m = _SURROGATE.search(k)
                if m:
                    return (*path, k), m.group()
            stack.extend(((*path, k), item) for k, item in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend(((*path, i), item) for i, item in reversed(list(enumerate(v))))
    return None


def surrogate_error(body: bytes) -> APIError | None:
    """The 400 for a JSON body holding a lone surrogate; None for any other body (bad JSON is the route's)."""
    if not _SUSPECT.search(body):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = find_surrogate(value)
    if found is None:
        return None
    path, point = found
    # A key may itself hold the surrogate: written as its escape, or the error body could not be encoded either.
    param = format_param(tuple(p.encode("utf-8", "backslashreplace").decode() if isinstance(p, str) else p
                               for p in path))
    what = f"Invalid value for '{param}'" if param else "Invalid request body"
    return APIError(400, f"{what}: the text holds a lone UTF-16 surrogate (U+{ord(point):04X}), which is not a "
                    "Unicode character. Send valid UTF-8 text (a character outside the BMP escaped as a "
                    "surrogate pair, such as \\ud83d\\ude00, is fine).", param=param, code="invalid_value")


class TextGuardMiddleware:
    """Reads the whole request body, refuses it with :func:`surrogate_error`, else replays it to the app.

    Pure ASGI: the messages the app receives are the ones the client sent, in order (a disconnect while the
    body arrives included), and later ``receive`` calls (disconnect detection) go to the server as before.
    Sits inside the body-size limit, so it never holds more than that.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if messages[-1]["type"] == "http.request":
            body = b"".join(m.get("body", b"") for m in messages)
            err = surrogate_error(body)
            if err is not None:
                await error_response(err)(scope, receive, send)
                return
        pending = iter(messages)

        async def replay() -> Message:
            message = next(pending, None)
            return message if message is not None else await receive()

        await self.app(scope, replay, send)

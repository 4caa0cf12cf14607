"""Forwarding a chat request to an upstream OpenAI-compatible server (a catalog entry with ``base_url``).

What the API route calls, for ``entry.is_upstream``::

    gateway.authorize_model(principal, entry.id)
    admission = await gateway.admit(principal, entry, prompt_tokens=estimate_prompt_tokens(body),
                                    max_tokens=reservation_max_tokens(entry, body), generation_id=gen_id)
    up = await forward_chat(entry, body, stream=stream)     # APIError: 502 down, 504 timeout, upstream 4xx
    # non-stream: return up.json (usage.cost added); stream: async for chunk in up.stream(): yield chunk
    await gateway.settle(admission, up.usage_or_estimate(admission.prompt_tokens), status=up.status, ...)
    await up.aclose()                                       # always (finally)

Streams are passed through line by line unchanged, except the final usage chunk, which gets ``usage.cost``
(priced by our catalog), and the ``id`` of every chunk (and of a whole response), which becomes ours
(``response_id``: the generation id of our ledger row and of the ``X-Generation-Id`` header). For streams the upstream is asked for ``stream_options.include_usage`` so the
usage chunk exists; a stream cut short (client gone, upstream died) is metered by its content chunks.
Connections are pooled per ``base_url`` (one ``httpx.AsyncClient`` each, closed by ``close_clients``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx

from qwen3_api.errors import APIError
from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.pricing import Usage, price

DEFAULT_TIMEOUT_S = float(os.environ.get("QWEN3_API_UPSTREAM_TIMEOUT", "600"))
_clients: dict[tuple[str, int], httpx.AsyncClient] = {}


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """An upper bound on the upstream's prompt tokens (one per UTF-8 byte, plus template overhead).

    The upstream's tokenizer is not ours; over-reserving is safe (settlement charges the true count).
    """
    parts = [body.get("messages") or [], body.get("tools") or [], body.get("response_format") or {}]
    size = sum(len(json.dumps(p, ensure_ascii=False).encode("utf-8")) for p in parts)
    return size + 8 * len(body.get("messages") or []) + 16


def reservation_max_tokens(entry: CatalogEntry, body: dict[str, Any]) -> int:
    """The completion tokens to hold credit for: the request's max_tokens, else the entry's ceiling."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(asked, int) and asked > 0:
        return asked * max(1, int(body.get("n") or 1))
    return int(entry.max_completion_tokens or entry.context_length or 4096)


def _client(base_url: str) -> httpx.AsyncClient:
    # Pooled connections belong to one event loop (tests and embedders may run several).
    key = (base_url, id(asyncio.get_running_loop()))
    client = _clients.get(key)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/",
                                   limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        _clients[key] = client
    return client


async def close_clients() -> None:
    """Close every pooled upstream connection (at app shutdown)."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _clients if k[1] == loop]:
        await _clients.pop(key).aclose()


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> APIError:
    return APIError(status, message, "upstream_error" if status >= 500 else "invalid_request_error",
                    code=code, headers=headers)


def _map_status(entry: CatalogEntry, response: httpx.Response, text: str) -> APIError:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text[:500] or response.reason_phrase
    status = response.status_code
    if status in (400, 404, 409, 413, 422, 429):
        keep = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "retry-after-ms")}
        return APIError(status, f"upstream for '{entry.id}': {message}",
                        "rate_limit_error" if status == 429 else "invalid_request_error",
                        code="upstream_" + str(status), headers=keep)
    if status in (401, 403):
        return _error(502, f"The upstream for '{entry.id}' rejected this server's credentials "
                      f"({status}); check {entry.api_key_env or 'its api_key_env'}.", "upstream_auth_failed")
    return _error(502, f"The upstream for '{entry.id}' failed ({status}): {message}", "upstream_error")


class UpstreamResponse:
    """One forwarded request: the JSON (non-stream) or the SSE lines (stream), and what it used."""

    def __init__(self, entry: CatalogEntry, response: httpx.Response, started: float,
                 response_id: str | None = None) -> None:
        self.entry = entry
        self.response_id = response_id
        self.response = response
        self.started = started
        self.json: dict[str, Any] | None = None
        self.usage: Usage | None = None
        self.ttft_s: float | None = None
        self.status = "cancelled"  # until the stream ends normally or with an error
        self.error: APIError | None = None
        self.content_chunks = 0

    @property
    def cost(self) -> Decimal | None:
        return None if self.usage is None else price(self.entry, self.usage)

    def _priced_usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        self.usage = Usage.from_openai(usage)
        return {**usage, "cost": float(price(self.entry, self.usage))}

    def usage_or_estimate(self, prompt_tokens: int) -> Usage:
        """The upstream's usage; for a stream cut before its usage chunk, one token per content chunk."""
        if self.usage is not None:
            return self.usage
        if self.content_chunks == 0:
            return Usage()
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=self.content_chunks)

    async def stream(self) -> AsyncIterator[bytes]:
        """The upstream's SSE lines, as bytes; a failure mid-stream ends it with an OpenAI error event."""
        try:
            async for line in self.response.aiter_lines():
                if line.startswith("data:"):
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        # The answer is complete here: a client that hangs up right after [DONE] (the SDK
                        # does) must not turn it into a cancelled generation.
                        self.status = "error" if self.error is not None else "completed"
                    elif payload:
                        line = self._inspect(line)
                yield (line + "\n").encode("utf-8")
            self.status = "error" if self.error is not None else "completed"
        except httpx.TimeoutException:
            yield self._fail(_error(504, f"The upstream for '{self.entry.id}' timed out mid-stream.",
                                    "upstream_timeout"))
        except httpx.HTTPError as exc:
            yield self._fail(_error(502, f"The upstream for '{self.entry.id}' broke off the stream: "
                                    f"{type(exc).__name__}.", "upstream_error"))

    def _fail(self, err: APIError) -> bytes:
        self.error, self.status = err, "error"
        return f"data: {json.dumps(err.body())}\n\n".encode()

    def _inspect(self, line: str) -> str:
        try:
            event = json.loads(line[5:])
        except ValueError:
            return line
        if not isinstance(event, dict):
            return line
        if event.get("error"):
            self.error = _error(502, str(event["error"].get("message", event["error"]))
                                if isinstance(event["error"], dict) else str(event["error"]), "upstream_error")
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content") or delta.get("tool_calls"):
                self.content_chunks += 1
                if self.ttft_s is None:
                    self.ttft_s = time.monotonic() - self.started
        changed = False
        if isinstance(event.get("usage"), dict):
            event["usage"] = self._priced_usage(event["usage"])
            changed = True
        if self.response_id is not None and "id" in event and event["id"] != self.response_id:
            event["id"] = self.response_id
            changed = True
        return "data: " + json.dumps(event, ensure_ascii=False) if changed else line

    async def aclose(self) -> None:
        await self.response.aclose()


async def forward_chat(entry: CatalogEntry, body: dict[str, Any], *, stream: bool,
                       timeout_s: float | None = None, path: str = "chat/completions",
                       response_id: str | None = None) -> UpstreamResponse:
    """Send ``body`` to ``entry.base_url``; 502 when it is down or fails, 504 on timeout, its 4xx passed on.

    ``response_id`` replaces the upstream's own id in the answer (our generation id)."""
    if entry.base_url is None:
        raise ValueError(f"catalog entry {entry.id!r} has no base_url")
    headers = {"Accept": "text/event-stream" if stream else "application/json"}
    if entry.api_key_env:
        secret = os.environ.get(entry.api_key_env)
        if not secret:
            raise _error(502, f"The upstream key for '{entry.id}' is not configured: set ${entry.api_key_env}.",
                         "upstream_key_missing")
        headers["Authorization"] = f"Bearer {secret}"
    payload = {**body, "model": entry.upstream_model or entry.id, "stream": stream}
    if stream:
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    timeout = httpx.Timeout(timeout_s or DEFAULT_TIMEOUT_S, connect=min(10.0, timeout_s or 10.0))
    client = _client(entry.base_url)
    started = time.monotonic()
    try:
        request = client.build_request("POST", path, json=payload, headers=headers, timeout=timeout)
        response = await client.send(request, stream=True)
    except httpx.TimeoutException:
        raise _error(504, f"The upstream for '{entry.id}' did not answer within {timeout.read} s.",
                     "upstream_timeout") from None
    except httpx.HTTPError as exc:
        raise _error(502, f"The upstream for '{entry.id}' is unreachable ({type(exc).__name__}).",
                     "upstream_unavailable") from None
    result = UpstreamResponse(entry, response, started, response_id)
    try:
        if response.status_code >= 400:
            raise _map_status(entry, response, (await response.aread()).decode("utf-8", "replace"))
        if not stream:
            data = json.loads(await response.aread())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if isinstance(data.get("usage"), dict):
                data["usage"] = result._priced_usage(data["usage"])
            if response_id is not None:
                data["id"] = response_id
            result.json = data
            result.ttft_s = time.monotonic() - started
            result.status = "completed"
            await response.aclose()
    except httpx.TimeoutException:
        await response.aclose()
        raise _error(504, f"The upstream for '{entry.id}' did not answer within {timeout.read} s.",
                     "upstream_timeout") from None
    except (httpx.HTTPError, ValueError) as exc:
        await response.aclose()
        raise _error(502, f"The upstream for '{entry.id}' sent an unusable answer ({type(exc).__name__}).",
                     "upstream_error") from None
    except BaseException:
        await response.aclose()
        raise
    return result

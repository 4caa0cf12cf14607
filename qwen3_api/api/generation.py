"""One generation's lifecycle around the engine: admit, run, and settle exactly once whatever happens.

The routes own the text (chat or legacy); this owns the money and the bookkeeping: the Gateway's reservation
before the engine sees the request, the timing (TTFT, inter-token latency), the abort of an abandoned request
(its KV blocks go back to the pool), and one ``settle`` with the tokens actually generated.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anyio

from qwen3_api.api import access_log
from qwen3_api.api.state import AppState
from qwen3_api.engine.exceptions import PromptTooLongError
from qwen3_api.engine.outputs import RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.errors import APIError
from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.pricing import Usage

log = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    """``chatcmpl-<32 hex>`` / ``cmpl-<32 hex>``: the response id, also the ledger's generation id."""
    return f"{prefix}-{uuid.uuid4().hex}"


class Generation:
    """Admission, the engine stream and settlement of one request. Use ``async with`` around ``stream()``."""

    def __init__(self, state: AppState, principal: Any, entry: CatalogEntry, request_id: str,
                 prompt_ids: list[int], params: SamplingParams, streamed: bool) -> None:
        self.state = state
        self.principal = principal
        self.entry = entry
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.streamed = streamed
        access_log.note(id=request_id, key=getattr(principal, "label", None))
        self.started = time.monotonic()
        self.ttft_s: float | None = None
        self.cached_tokens = 0
        # Tokens each choice consumed (the route may stop a choice early on a stop string).
        self.completion_tokens = [0] * params.n
        self.reasoning_tokens = [0] * params.n
        self.admission: Any = None
        self.cost: Decimal | None = None
        # Until the route says "completed" or "error", an ending is the client's: it went away.
        self.status = "cancelled"
        self.http_status: int | str = 499
        self._closed = False
        self._engine_done = False
        self._settled = False
        self._last_step: float | None = None
        self._cut: APIError | None = None  # set when the server's shutdown deadline ends this request

    async def __aenter__(self) -> Generation:
        self.admission = await self.state.gateway.admit(
            self.principal, self.entry, prompt_tokens=len(self.prompt_ids),
            max_tokens=int(self.params.max_tokens or 0) * self.params.n, generation_id=self.request_id)
        try:
            self.state.drain.track(self)  # shutdown waits for this generation to settle
        except APIError as exc:
            self.fail(exc)
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class() | GeneratorExit):
            self.fail(exc)
        with anyio.CancelScope(shield=True):
            await self.close()

    def headers(self) -> dict[str, str]:
        """What every admitted response carries: the Gateway's (X-RateLimit-*, X-Cost-Currency) and
        ``X-Generation-Id``, equal to the response body's id and to the ledger row's."""
        headers = dict(getattr(self.admission, "headers", None) or {})
        headers["X-Generation-Id"] = self.request_id
        return headers

    def fail(self, exc: BaseException) -> None:
        """Record that the request ended in an error (settled as ``error``)."""
        self.status = "error"
        self.http_status = exc.status if isinstance(exc, APIError) else 500

    def complete(self) -> None:
        """Record that the request ran to its end (settled as ``completed``)."""
        self.status, self.http_status = "completed", 200

    async def cut(self, err: APIError) -> None:
        """The shutdown deadline: stop the engine's work; the stream then raises ``err`` (drain.py)."""
        self._cut = err
        await self.abort()

    async def stream(self) -> AsyncIterator[RequestOutput]:
        """The engine's outputs (delta mode); PromptTooLongError becomes ``context_length_exceeded``; a
        generation cut at shutdown raises the drain's 503."""
        if self._cut is not None:
            raise self._cut
        try:
            agen = self.state.engine.generate(self.prompt_ids, self.params, self.request_id)
            async for out in agen:
                if self._cut is not None:
                    raise self._cut
                now = time.monotonic()
                if self.ttft_s is None:
                    self.ttft_s = now - self.started
                    self.state.metrics.ttft.observe(self.ttft_s)
                    self.cached_tokens = int(out.num_cached_tokens or 0)
                elif self._last_step is not None:
                    self.state.metrics.itl.observe(now - self._last_step)
                self._last_step = now
                if out.finished:
                    self._engine_done = True
                yield out
        except PromptTooLongError as exc:
            raise APIError(400, f"This model's maximum context length is {self.state.max_model_len} tokens: "
                           f"{exc}.", param="messages", code="context_length_exceeded") from None

    def usage(self) -> Usage:
        """What was used so far: every token the engine produced for a choice counts, reasoning included."""
        return Usage(prompt_tokens=len(self.prompt_ids), completion_tokens=sum(self.completion_tokens),
                     cached_tokens=self.cached_tokens, reasoning_tokens=sum(self.reasoning_tokens))

    async def abort(self) -> None:
        """Stop the engine's work on this request (idempotent)."""
        if not self._engine_done:
            self._engine_done = True
            try:
                await self.state.engine.abort(self.request_id)
            except Exception:  # noqa: BLE001 - an abort must never turn a response into an error
                log.exception("abort of %s failed", self.request_id)

    async def settle(self, status: str) -> Decimal | None:
        """Charge the request once (later calls return the first result). Never raises."""
        if self._settled:
            return self.cost
        self._settled = True
        self.status = status
        usage = self.usage()
        duration = time.monotonic() - self.started
        access_log.note(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, outcome=status)
        try:
            cost = await self.state.gateway.settle(self.admission, usage, status=status, streamed=self.streamed,
                                                   ttft_s=self.ttft_s, duration_s=duration)
            self.cost = cost if cost is not None else self.entry.cost(usage.prompt_tokens,
                                                                      usage.completion_tokens, usage.cached_tokens)
        except Exception:  # noqa: BLE001 - the answer exists; a billing failure is the platform's to log
            log.exception("settle of %s failed", self.request_id)
            self.cost = self.entry.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        m = self.state.metrics
        m.observe_usage(usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.cached_tokens)
        m.e2e.observe(duration)
        return self.cost

    async def close(self) -> None:
        """Abort what still runs, settle with the status reached, count the request. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.abort()
        if self.admission is not None:
            await self.settle(self.status)
        self.state.drain.untrack(self)

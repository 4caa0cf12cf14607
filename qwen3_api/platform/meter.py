"""One request's bill, from admission to settlement: the only caller of ``Gateway.admit`` and ``Gateway.settle``.

    async with gateway.meter(principal, entry, prompt_tokens=..., max_tokens=..., generation_id=...,
                             streamed=..., endpoint="/v1/...") as meter:
        ...                                   # run; meter.usage / meter.first_token() as it goes
    meter.cost                                # settled: exactly once, however the block ended

``__aenter__`` admits (rate limits 429, the credit hold 402); leaving the block settles, with the status read
from how it ended: normally -> ``completed``; cancelled or closed (the client went away) -> ``cancelled``; an
exception -> ``error``. Settlement is shielded from cancellation and never raises (the Gateway's contract).

A streamed response must know its admission before the 200 goes out, but runs its body later: it calls
``await meter.admit()`` first and enters the block inside the body (``__aenter__`` then admits nothing more);
``close()`` settles a meter whose body never ran (the client left before the first byte) as ``cancelled``.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any, Protocol

import anyio

from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.pricing import Usage
from qwen3_api.platform.principal import Admission, Principal

log = logging.getLogger("qwen3_api.platform.meter")
GENERATION_ID_HEADER = "X-Generation-Id"


class Admitter(Protocol):
    """What a meter needs of the Gateway (gateway.py implements it; tests may record instead)."""

    async def admit(self, principal: Principal, entry: CatalogEntry, *, prompt_tokens: int, max_tokens: int,
                    generation_id: str) -> Admission: ...

    async def settle(self, admission: Admission, usage: Usage, *, status: str, streamed: bool,
                     ttft_s: float | None, duration_s: float, endpoint: str | None = None) -> Decimal: ...


class Meter:
    """Admission, usage and the one settlement of a request (see the module docstring)."""

    def __init__(self, gateway: Admitter, principal: Principal, entry: CatalogEntry, *, prompt_tokens: int,
                 max_tokens: int, generation_id: str, streamed: bool, endpoint: str | None = None) -> None:
        self.gateway = gateway
        self.endpoint = endpoint  # the route, recorded on the ledger row (/v1/chat/completions, /v1/messages ...)
        self.principal = principal
        self.entry = entry
        self.generation_id = generation_id
        self.streamed = streamed
        self.max_tokens = max_tokens
        self.usage = Usage(prompt_tokens=prompt_tokens)
        self.admission: Admission | None = None
        self.status: str | None = None  # once settled: completed | cancelled | error
        self.cost: Decimal | None = None
        self.ttft_s: float | None = None
        self.started = time.monotonic()
        self._settled = False

    @property
    def headers(self) -> dict[str, str]:
        """What every admitted response carries: the Gateway's (X-RateLimit-*, X-Cost-Currency) and
        ``X-Generation-Id`` (the response's id and the ledger row's)."""
        headers = dict(self.admission.headers if self.admission is not None else {})
        headers[GENERATION_ID_HEADER] = self.generation_id
        return headers

    @property
    def settled(self) -> bool:
        return self._settled

    async def admit(self) -> Meter:
        """Rate limits and the credit hold (429 / 402 raise here); idempotent."""
        if self.admission is None:
            self.started = time.monotonic()
            self.admission = await self.gateway.admit(self.principal, self.entry,
                                                      prompt_tokens=self.usage.prompt_tokens,
                                                      max_tokens=self.max_tokens, generation_id=self.generation_id)
        return self

    def first_token(self) -> None:
        """The first output arrived: time to first token (once)."""
        if self.ttft_s is None:
            self.ttft_s = time.monotonic() - self.started

    async def __aenter__(self) -> Meter:
        return await self.admit()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            status = "completed"
        elif isinstance(exc, anyio.get_cancelled_exc_class() | GeneratorExit):
            status = "cancelled"
        else:
            status = "error"
        await self.settle(status)

    async def close(self) -> None:
        """Settle an admitted meter that was never entered or left (a response whose body never ran)."""
        await self.settle("cancelled")

    async def settle(self, status: str) -> Decimal | None:
        """Charge the usage once (later calls return the first cost); shielded; never raises."""
        if self.admission is None or self._settled:
            return self.cost
        self._settled = True
        self.status = status
        with anyio.CancelScope(shield=True):
            try:
                self.cost = await self.gateway.settle(self.admission, self.usage, status=status,
                                                      streamed=self.streamed, ttft_s=self.ttft_s,
                                                      duration_s=time.monotonic() - self.started,
                                                      endpoint=self.endpoint)
            except Exception:  # noqa: BLE001 - the answer exists; the Gateway logs its own failures
                log.exception("settle of %s failed", self.generation_id)
                self.cost = self.entry.cost(self.usage.prompt_tokens, self.usage.completion_tokens,
                                            self.usage.cached_tokens)
        return self.cost

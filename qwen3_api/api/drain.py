"""Shutdown without losses: in-flight requests finish, or end cleanly and settle, before the platform closes.

On SIGTERM the server stops accepting connections (uvicorn) and calls ``Drain.begin``. Requests already admitted
run on for up to ``timeout_s`` (``serve --shutdown-timeout``, default 30 s). Whatever still runs then is cut: its
engine request is aborted and it ends with an error (a final SSE error event and ``[DONE]`` for a stream, a 503
for a whole answer), and it settles as ``error`` with the tokens it produced. The app's lifespan waits here until
every tracked request has settled, and only then closes the Gateway, which returns the credit leases: no hold
of a request in flight can be stranded in ``reserved``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from qwen3_api.errors import APIError

log = logging.getLogger("qwen3_api.drain")


class Cuttable(Protocol):
    """An admitted request the drain can end at the deadline."""

    async def cut(self, err: APIError) -> None: ...


def shutdown_error() -> APIError:
    """What a request still running at the shutdown deadline ends with."""
    return APIError(503, "The server is shutting down and could not finish this request in time; retry it.",
                    "server_error", code="server_shutting_down", headers={"Retry-After": "1"})


class Drain:
    """The requests in flight, and the shutdown deadline for them."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.deadline_passed = False
        self._active: set[Cuttable] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> int:
        """How many admitted requests have not settled yet."""
        return len(self._active)

    def check_open(self) -> None:
        """503 once the shutdown deadline has passed: nothing new is admitted."""
        if self.deadline_passed:
            raise shutdown_error()

    def track(self, item: Cuttable) -> None:
        """An admitted request starts; refused (503) once the deadline has passed."""
        if self.deadline_passed:
            raise shutdown_error()
        self._active.add(item)
        self._idle.clear()

    def untrack(self, item: Cuttable) -> None:
        """A tracked request has settled."""
        self._active.discard(item)
        if not self._active:
            self._idle.set()

    def begin(self) -> None:
        """Start draining (idempotent): the running requests have ``timeout_s`` to finish."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d request(s) in flight get up to %.0f s to finish", len(self._active), self.timeout_s)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout_s, lambda: loop.create_task(self.cut_all()))

    async def cut_all(self) -> None:
        """The deadline: end every request still in flight (each settles as it unwinds)."""
        self.deadline_passed = True
        if self._active:
            log.warning("shutdown deadline: ending %d request(s) still in flight", len(self._active))
        err = shutdown_error()
        for item in list(self._active):
            try:
                await item.cut(err)
            except Exception:  # noqa: BLE001 - one request's trouble must not keep the others running
                log.exception("cutting a request at shutdown failed")

    async def wait_settled(self, timeout_s: float) -> bool:
        """Wait until every tracked request has settled (at most ``timeout_s``); False if some have not."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            log.error("%d request(s) did not settle before shutdown", len(self._active))
            return False

"""Credit reservations: hold a request's maximum cost before it runs, charge the true cost after.

Design (why the balance can never go below zero, even with several replicas on one PostgreSQL):
each key row carries ``credit`` (the limit), ``spent`` and ``reserved``. A request is admitted only by

    UPDATE api_keys SET reserved = reserved + :x WHERE id = :id AND credit - spent - reserved >= :x

which the database evaluates and applies atomically under the row lock, so two requests racing for the
last yuan cannot both win: the loser's UPDATE matches no row (402). Settlement moves the reservation to
``spent`` (``reserved -= :x, spent += :cost``) in the same transaction that writes the ledger row, and the
cost can never exceed the reservation for local models (completion tokens <= max_tokens). Nothing is
read-then-written in Python, so no lock outlives one statement, and keys without a credit limit skip
the reservation entirely (no database write on admission).

To keep the database off the request path, a replica reserves in leases (``CreditLeases``) and admits
most requests against its lease in memory; the same statement guards every lease, so the guarantee holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, literal, update

from qwen3_api.platform.db import Database
from qwen3_api.platform.tables import Money, api_keys

log = logging.getLogger("qwen3_api.platform.credits")


def reserve(conn: Connection, key_id: int, amount: Decimal) -> bool:
    """Hold ``amount`` of the key's credit; False (nothing changed) when the credit left is smaller."""
    amount_col = _money(amount)
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.credit.is_not(None),
               api_keys.c.credit - api_keys.c.spent - api_keys.c.reserved >= amount_col)
        .values(reserved=api_keys.c.reserved + amount_col)
    )
    return result.rowcount == 1


def release(conn: Connection, key_id: int, amount: Decimal) -> None:
    """Give back a reservation that will not be charged (the request never ran)."""
    conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                 .values(reserved=api_keys.c.reserved - _money(amount)))


def charge(conn: Connection, key_id: int, cost: Decimal, reserved: Decimal) -> None:
    """Turn a reservation into spend: ``spent += cost``, ``reserved -= reserved`` in one statement."""
    conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                 .values(spent=api_keys.c.spent + _money(cost), reserved=api_keys.c.reserved - _money(reserved)))


def _money(amount: Decimal):  # noqa: ANN202 - a SQL bind parameter typed as Money
    return literal(Decimal(amount), Money())


@dataclass(slots=True)
class _Lease:
    leased: Decimal = Decimal(0)  # reserved in the database for this replica
    held: Decimal = Decimal(0)  # of which running requests hold
    last_used: float = 0.0
    uses: int = 0  # holds served since the last refill: sizes the next lease to the key's pace
    size: Decimal = Decimal(0)  # the last lease taken; below a quarter of it left, the next is prefetched
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CreditLeases:
    """Per-replica credit leases: most admissions touch no database at all.

    A replica reserves credit in the database (the conditional UPDATE above) in leases of ``factor`` times
    a request's maximum cost (more for a busy key: twice what the last lease served, at most
    ``max_factor`` times), and admits requests against its lease in memory. Every yuan a request can
    spend is therefore reserved in the database before it runs, so the balance never goes below zero
    across replicas. When the lease is short, the replica asks for a new one, then for just what the
    request needs; only if both fail is the answer 402. Unused leases return to the database after
    ``idle_s`` without requests (so another replica can use that credit) and at shutdown. Trade-off: near
    exhaustion, a request on one replica may get 402 while another replica still holds unused lease
    for up to ``idle_s``; a replica killed without shutdown strands its unused lease in ``reserved``
    (``qwen3-api keys reset-reserved`` frees it while no server runs).
    """

    def __init__(self, db: Database, *, factor: int = 8, max_factor: int = 256, idle_s: float = 10.0) -> None:
        self.db = db
        self.factor = max(1, factor)
        self.max_factor = max(self.factor, max_factor)
        self.idle_s = idle_s
        self._leases: dict[int, _Lease] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    def available(self, key_id: int) -> Decimal:
        """Credit this replica holds for the key and no running request uses."""
        lease = self._leases.get(key_id)
        return lease.leased - lease.held if lease else Decimal(0)

    def _take(self, lease: _Lease, amount: Decimal) -> bool:
        if lease.leased - lease.held >= amount:
            lease.held += amount
            lease.uses += 1
            lease.last_used = time.monotonic()
            return True
        return False

    async def hold(self, key_id: int, amount: Decimal) -> bool:
        """Hold ``amount`` for a request; False when neither the lease nor the database has it (402)."""
        lease = self._leases.setdefault(key_id, _Lease())
        if self._take(lease, amount):
            if lease.leased - lease.held < lease.size / 4 and not lease.lock.locked():
                self._spawn(self._prefetch(lease, key_id, amount))
            return True
        async with lease.lock:  # one database round trip per key at a time; the others reuse its lease
            if self._take(lease, amount):
                return True
            need = amount - (lease.leased - lease.held)
            # A busy key gets a bigger lease (twice what the last one served), so refills stay rare.
            factor = min(self.max_factor, max(self.factor, 2 * lease.uses))
            lease.uses = 0
            for want in dict.fromkeys((max(need, amount * factor), need)):
                if await self._reserve(lease, key_id, want, amount):
                    lease.size = want
                    return True
            return False

    async def _prefetch(self, lease: _Lease, key_id: int, amount: Decimal) -> None:
        # The lease is running low: top it up in the background so requests rarely wait for the database.
        try:
            async with lease.lock:
                if lease.leased - lease.held >= lease.size / 4:
                    return
                factor = min(self.max_factor, max(self.factor, 2 * lease.uses))
                lease.uses = 0
                want = amount * factor
                if await self._reserve(lease, key_id, want, Decimal(0)):
                    lease.size = want
        except Exception:  # noqa: BLE001 - the next request that finds the lease short tries again
            log.exception("credit lease prefetch failed for key %s", key_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reserve(self, lease: _Lease, key_id: int, want: Decimal, amount: Decimal) -> bool:
        task = asyncio.ensure_future(self.db.run(lambda conn: reserve(conn, key_id, want)))

        def landed(t: asyncio.Future[bool]) -> None:
            # Take this request's share in the same step the lease lands, before any other request can.
            if not t.cancelled() and t.exception() is None and t.result():
                lease.leased += want
                if amount:
                    lease.held += amount
                    lease.uses += 1
                lease.last_used = time.monotonic()

        task.add_done_callback(landed)
        try:
            return bool(await asyncio.shield(task))
        except asyncio.CancelledError:
            # The request is gone but the UPDATE may still land: keep the lease, drop the share.
            def unhold(t: asyncio.Future[bool]) -> None:
                if not t.cancelled() and t.exception() is None and t.result():
                    lease.held -= amount

            task.add_done_callback(unhold)
            raise

    def consume(self, key_id: int, held: Decimal, cost: Decimal) -> Decimal:
        """A request ended: drop its hold and spend ``cost`` of the lease; returns what left the lease."""
        lease = self._leases.get(key_id)
        if lease is None:
            return Decimal(0)
        used = min(cost, held)
        lease.held -= held
        lease.leased -= used
        lease.last_used = time.monotonic()
        return used

    def _idle(self, everything: bool) -> list[tuple[int, Decimal]]:
        now, out = time.monotonic(), []
        for key_id, lease in self._leases.items():
            spare = lease.leased - lease.held
            if spare > 0 and (everything or (lease.held == 0 and now - lease.last_used >= self.idle_s)):
                lease.leased -= spare
                out.append((key_id, spare))
        return out

    def _give_back(self, returns: list[tuple[int, Decimal]]) -> Callable[[Connection], None]:
        def tx(conn: Connection) -> None:
            for key_id, spare in returns:
                release(conn, key_id, spare)
        return tx

    async def return_idle(self, everything: bool = False) -> None:
        """Give unused leases back to the database (idle ones, or all at shutdown)."""
        returns = self._idle(everything)
        if returns:
            await self.db.run(self._give_back(returns))

    async def wait_idle(self) -> None:
        """Wait for background prefetches (at shutdown, before returning leases)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def return_all_sync(self) -> None:
        """``return_idle(everything=True)`` from outside any event loop (CLI tools, tests, shutdown)."""
        returns = self._idle(True)
        if returns:
            self.db.run_sync(self._give_back(returns))

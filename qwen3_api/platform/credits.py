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
Each lease is also a row owned by the replica (replicas.py): reserving, returning and settling move the row
with ``reserved`` in one transaction, and a replica that stops heartbeating (killed, or paused past the
expiry) has its leases reclaimed by the others, so a crash strands no credit for longer than the expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import Connection, literal, update

from qwen3_api.platform import replicas
from qwen3_api.platform.db import Database
from qwen3_api.platform.replicas import LeaseLost, Reclaimed
from qwen3_api.platform.tables import MONEY_SCALE, Money, api_keys

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


def reserve_leased(conn: Connection, replica_id: str, key_id: int, amount: Decimal) -> bool:
    """``reserve`` into replica ``replica_id``'s lease row, in one transaction; raises LeaseLost when reclaimed.

    Locks follow the one order (replica row, lease row, key row; see replicas.py), so the lease row is raised
    before the conditional UPDATE and lowered back when the key has not that much credit left.
    """
    replicas.touch(conn, replica_id)
    replicas.add_to_lease(conn, replica_id, key_id, amount)
    if reserve(conn, key_id, amount):
        return True
    replicas.take_from_lease(conn, replica_id, key_id, amount)
    return False


def release_leased(conn: Connection, replica_id: str, returns: list[tuple[int, Decimal]]) -> None:
    """Give unused lease back: out of each lease row that still holds it, then out of ``reserved``.

    A lease already reclaimed gives nothing (its amount left ``reserved`` with the reclaim).
    """
    taken = [(key_id, amount) for key_id, amount in sorted(returns)
             if replicas.take_from_lease(conn, replica_id, key_id, amount)]
    for key_id, amount in taken:
        release(conn, key_id, amount)


_UNIT = Decimal(1) / MONEY_SCALE


def on_grid(amount: Decimal) -> Decimal:
    """``amount`` rounded up to what a Money column stores, so memory and database add up to the same unit."""
    return Decimal(amount).quantize(_UNIT, rounding=ROUND_CEILING)


@dataclass(slots=True, eq=False)
class Lease:
    """This replica's share of one key's ``reserved``, owned by one replica id (the lease row's owner)."""

    owner: str
    leased: Decimal = Decimal(0)  # reserved in the database for this replica
    held: Decimal = Decimal(0)  # of which running requests hold
    last_used: float = 0.0
    uses: int = 0  # holds served since the last refill: sizes the next lease to the key's pace
    size: Decimal = Decimal(0)  # the last lease taken; below a quarter of it left, the next is prefetched
    lost: bool = False  # reclaimed (or returned at shutdown): admits nothing more; its holds settle as spend
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CreditLeases:
    """Per-replica credit leases: most admissions touch no database at all.

    A replica reserves credit in the database (the conditional UPDATE above) in leases of ``factor`` times
    a request's maximum cost (more for a busy key: twice what the last lease served, at most
    ``max_factor`` times), and admits requests against its lease in memory. Every yuan a request can
    spend is therefore reserved in the database before it runs, so the balance never goes below zero
    across replicas. When the lease is short, the replica asks for a new one, then for just what the
    request needs; only if both fail is the answer 402. Unused leases return to the database after
    ``idle_s`` without requests (so another replica can use that credit) and at shutdown (``retire``).
    Trade-off: near exhaustion, a request on one replica may get 402 while another replica still holds
    unused lease for up to ``idle_s``.

    Crashes: the replica heartbeats every ``heartbeat_s`` (``maintain``, from the gateway's sweeper), and
    reclaims the leases of replicas silent for more than ``expiry_s`` (replicas.py), so a ``kill -9`` strands
    credit for ``expiry_s`` at most. A replica admits from memory only while its last confirmed heartbeat is
    younger than ``expiry_s - heartbeat_s`` (measured from before that heartbeat was sent), i.e. while no
    other replica can have reclaimed it yet; otherwise it confirms with the database first. If it finds it
    was reclaimed (a pause longer than the expiry), it drops its leases and goes on as a new replica: new
    requests lease afresh, and requests it admitted before the pause settle as spend only, without touching
    ``reserved`` (whose share the reclaim already released). The key can then be over its credit by at most
    what those requests held.
    """

    def __init__(self, db: Database, *, factor: int = 8, max_factor: int = 256, idle_s: float = 10.0,
                 heartbeat_s: float = 5.0, expiry_s: float = 30.0) -> None:
        if not 0 < 2 * heartbeat_s <= expiry_s:
            raise ValueError(f"lease expiry ({expiry_s} s) must be at least twice the heartbeat ({heartbeat_s} s)")
        self.db = db
        self.factor = max(1, factor)
        self.max_factor = max(self.factor, max_factor)
        self.idle_s = idle_s
        self.heartbeat_s = heartbeat_s
        self.expiry_s = expiry_s
        self.replica_id = replicas.new_replica_id()
        self._registered = False
        # every id this object registered and has not deleted (normally just replica_id): retire removes them
        # all, so a registration that landed late never leaves a row behind
        self._owned: set[str] = set()
        self._confirmed = float("-inf")  # monotonic time before the last heartbeat the database accepted
        self._confirming: asyncio.Future[None] | None = None
        self._last_beat = float("-inf")
        self._leases: dict[int, Lease] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    def available(self, key_id: int) -> Decimal:
        """Credit this replica holds for the key and no running request uses."""
        lease = self._leases.get(key_id)
        return lease.leased - lease.held if lease else Decimal(0)

    def _lease(self, key_id: int) -> Lease:
        lease = self._leases.get(key_id)
        if lease is None:
            lease = self._leases[key_id] = Lease(self.replica_id)
        return lease

    def _fresh(self) -> bool:
        # No replica reclaims us before expiry_s after our last heartbeat; keep a heartbeat's margin.
        return time.monotonic() - self._confirmed < self.expiry_s - self.heartbeat_s

    def _take(self, lease: Lease, amount: Decimal) -> bool:
        if lease.leased - lease.held >= amount:
            lease.held += amount
            lease.uses += 1
            lease.last_used = time.monotonic()
            return True
        return False

    async def hold(self, key_id: int, amount: Decimal) -> Lease | None:
        """Hold ``amount`` for a request: the lease it came from (give it to ``consume``), or None (402).

        Raises LeaseLost only if this replica is reclaimed again and again while asking.
        """
        amount = on_grid(amount)
        for _ in range(3):
            lease = self._lease(key_id)
            if self._fresh() and self._take(lease, amount):
                if lease.leased - lease.held < lease.size / 4 and not lease.lock.locked():
                    self._spawn(self._prefetch(lease, key_id, amount))
                return lease
            async with lease.lock:  # one database round trip per key at a time; the others reuse its lease
                try:
                    if await self._hold_slow(lease, key_id, amount):
                        return lease
                    return None
                except LeaseLost as lost:
                    self._lost(lost.replica_id)
        raise LeaseLost(self.replica_id)

    async def _hold_slow(self, lease: Lease, key_id: int, amount: Decimal) -> bool:
        if not self._fresh():
            await self._confirm()
        if lease.lost:
            raise LeaseLost(lease.owner)
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

    async def _prefetch(self, lease: Lease, key_id: int, amount: Decimal) -> None:
        # The lease is running low: top it up in the background so requests rarely wait for the database.
        try:
            async with lease.lock:
                if lease.lost or not self._fresh() or lease.leased - lease.held >= lease.size / 4:
                    return
                factor = min(self.max_factor, max(self.factor, 2 * lease.uses))
                lease.uses = 0
                want = amount * factor
                if await self._reserve(lease, key_id, want, Decimal(0)):
                    lease.size = want
        except LeaseLost as lost:
            self._lost(lost.replica_id)
        except Exception:  # noqa: BLE001 - the next request that finds the lease short tries again
            log.exception("credit lease prefetch failed for key %s", key_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reserve(self, lease: Lease, key_id: int, want: Decimal, amount: Decimal) -> bool:
        owner, started = lease.owner, time.monotonic()
        task = asyncio.ensure_future(self.db.run(lambda conn: reserve_leased(conn, owner, key_id, want)))

        def landed(t: asyncio.Future[bool]) -> None:
            if t.cancelled() or t.exception() is not None:
                return
            self._alive(owner, started)  # the transaction heartbeat too
            # Take this request's share in the same step the lease lands, before any other request can.
            if t.result():
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

    def consume(self, key_id: int, held: Decimal, cost: Decimal, lease: Lease | None = None) -> Decimal:
        """A request ended: drop its hold and spend ``cost`` of its lease; returns what left the lease row.

        ``lease`` is what ``hold`` returned (default: the key's current lease). A lost lease returns 0: the
        reclaim already released its amount, so the settlement records spend only.
        """
        lease = lease or self._leases.get(key_id)
        if lease is None:
            return Decimal(0)
        held = on_grid(held)
        used = min(on_grid(cost), held)
        lease.held -= held
        lease.leased -= used
        lease.last_used = time.monotonic()
        return Decimal(0) if lease.lost else used

    # -- liveness -----------------------------------------------------------------------------------
    def _alive(self, owner: str, started: float) -> None:
        if owner == self.replica_id:
            self._registered = True
            self._confirmed = max(self._confirmed, started)

    async def _confirm(self) -> None:
        """Heartbeat now (registering the replica the first time); raises LeaseLost when reclaimed."""
        task = self._confirming
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._confirming = asyncio.ensure_future(self._heartbeat())
        await asyncio.shield(task)

    async def _heartbeat(self) -> None:
        owner, started, registered = self.replica_id, time.monotonic(), self._registered
        step = replicas.touch if registered else replicas.register
        if not registered:
            self._owned.add(owner)  # before the INSERT can land
        await self.db.run(lambda conn: step(conn, owner))
        self._alive(owner, started)

    def _lost(self, owner: str) -> None:
        if owner != self.replica_id:
            return  # already handled
        self._owned.discard(owner)  # its row is gone: another replica deleted it
        running = sum(lease.held > 0 for lease in self._leases.values())
        log.error("replica %s was reclaimed by another replica (no heartbeat for over %s s, e.g. a long pause): "
                  "its credit leases were released; requests admitted before are charged without their "
                  "reservation (%d keys); going on as a new replica", owner, self.expiry_s, running)
        self._reset()

    def _reset(self) -> None:
        for lease in self._leases.values():
            lease.lost = True
        self._leases = {}
        self.replica_id = replicas.new_replica_id()
        self._registered = False
        self._confirmed = float("-inf")

    async def reclaim(self) -> list[Reclaimed]:
        """Reclaim the leases of replicas that stopped heartbeating (any live replica may, periodically)."""
        found = await asyncio.to_thread(replicas.reclaim_expired, self.db, self.expiry_s, exclude=self.replica_id)
        _report(found)
        return found

    def reclaim_sync(self) -> list[Reclaimed]:
        """``reclaim`` from outside any event loop (at start-up)."""
        found = replicas.reclaim_expired(self.db, self.expiry_s, exclude=self.replica_id)
        _report(found)
        return found

    async def maintain(self) -> None:
        """One sweeper round: heartbeat and reclaim dead replicas' leases when due, then return idle leases."""
        now = time.monotonic()
        if now - self._last_beat >= self.heartbeat_s:
            self._last_beat = now
            try:
                await self._confirm()
            except LeaseLost as lost:
                self._lost(lost.replica_id)
            await self.reclaim()
        await self.return_idle()

    # -- returns ------------------------------------------------------------------------------------
    def _idle(self, everything: bool) -> list[tuple[int, Decimal]]:
        now, out = time.monotonic(), []
        for key_id, lease in self._leases.items():
            spare = lease.leased - lease.held
            if spare > 0 and (everything or (lease.held == 0 and now - lease.last_used >= self.idle_s)):
                lease.leased -= spare
                out.append((key_id, spare))
        return out

    async def return_idle(self, everything: bool = False) -> None:
        """Give unused leases back to the database (idle ones, or all of them)."""
        owner, returns = self.replica_id, self._idle(everything)
        if returns:
            await self.db.run(lambda conn: release_leased(conn, owner, returns))

    async def wait_idle(self) -> None:
        """Wait for background prefetches (at shutdown, before returning leases)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def return_all_sync(self) -> None:
        """``return_idle(everything=True)`` from outside any event loop (CLI tools, tests); the replica stays."""
        owner, returns = self.replica_id, self._idle(True)
        if returns:
            self.db.run_sync(lambda conn: release_leased(conn, owner, returns))

    async def retire(self) -> None:
        """At shutdown: give back all this replica leases (held parts too) and remove its replica row.

        Requests still running then settle as spend only. A later ``hold`` starts a new replica.
        """
        confirming = self._confirming
        if confirming is not None and not confirming.done():
            # A heartbeat in flight (e.g. from a sweeper cancelled just now, which does not stop it) may be the
            # replica's first: let its INSERT land before the DELETE below, or its row would outlive the replica.
            with contextlib.suppress(Exception):
                await asyncio.shield(confirming)
        owned = sorted(self._owned | ({self.replica_id} if self._leases else set()))
        self._owned = set()
        self._reset()
        if owned:
            returned = await self.db.run(lambda conn: [r for rid in owned for r in replicas.reclaim(conn, rid, None)])
            log.info("replica %s returned %d credit leases", ", ".join(owned), len(returned))


def _report(found: list[Reclaimed]) -> None:
    for r in found:
        silent = f"{r.silent_s:.1f} s" if r.silent_s is not None else "unknown"
        log.warning("reclaimed %s of key %s leased by replica %s (pid %s), silent for %s", r.amount, r.key_id,
                    r.replica_id, r.pid, silent)

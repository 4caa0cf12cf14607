"""Group commit for the ledger: every settlement's row and spend, written in one transaction per batch.

``settle`` hands its row to ``LedgerWriter.write`` and waits until it is committed (so a response never
finishes before its charge is durable). While one batch commits, the next ones queue up and go in the
following transaction together: at 32 concurrent requests the database sees a few transactions, not 32.
A batch that fails is retried with backoff; after ``attempts`` failures it is logged loudly and kept in
memory to go in with the next batch (and at ``close``). The writer never raises into a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from qwen3_api.platform import credits, ledger, replicas
from qwen3_api.platform.db import Database
from qwen3_api.platform.ledger import GenerationRecord
from qwen3_api.platform.tables import to_units

log = logging.getLogger("qwen3_api.platform.ledger")


@dataclass(slots=True)
class LedgerItem:
    """One settlement: the row, and what moves on the key (spend, and lease consumed from ``reserved``).

    ``owner``: the replica whose lease row ``release`` comes out of (credits.Lease.owner). The release leaves
    ``reserved`` only if that row still holds it; a reclaimed lease's settlement is spend only. Without an
    owner the release leaves ``reserved`` directly (no lease row).
    """

    record: GenerationRecord
    key_id: int | None
    label: str
    release: Decimal = Decimal(0)
    owner: str | None = None
    done: asyncio.Future[bool] | None = field(default=None, repr=False)


class LedgerWriter:
    """Batches settlements into transactions (see the module docstring)."""

    def __init__(self, db: Database, *, attempts: int = 3, max_batch: int = 500) -> None:
        self.db = db
        self.attempts = attempts
        self.max_batch = max_batch
        self._queue: list[LedgerItem] = []
        self._failed: list[LedgerItem] = []
        self._draining: asyncio.Future[Any] | None = None

    def pending(self, generation_id: str) -> GenerationRecord | None:
        """A row not yet committed (so this replica can show it right away)."""
        for item in (*self._queue, *self._failed):
            if item.record.id == generation_id:
                return item.record
        return None

    async def write(self, item: LedgerItem) -> bool:
        """Queue ``item`` and wait for its commit: True when written, False when kept for a later retry."""
        item.done = asyncio.get_running_loop().create_future()
        self._queue.append(item)
        self._kick()
        return await asyncio.shield(item.done)

    def _kick(self) -> None:
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            # Let requests that are about to settle in this same loop turn join the batch (free at low load).
            seen = -1
            while seen != len(self._queue) and len(self._queue) < self.max_batch:
                seen = len(self._queue)
                await asyncio.sleep(0)
            batch = self._failed + self._queue[: self.max_batch]
            self._failed, self._queue = [], self._queue[self.max_batch:]
            try:
                ok = await self._commit(batch)
            except BaseException:
                # Cancelled mid-commit (loop shutting down): keep the rows for flush()/flush_sync(), and
                # let their settlements return instead of waiting forever.
                self._failed = batch + self._failed
                for item in batch:
                    if item.done is not None and not item.done.done():
                        item.done.set_result(False)
                raise
            if not ok:
                self._failed = batch
            for item in batch:
                if item.done is not None and not item.done.done():
                    item.done.set_result(ok)

    async def _commit(self, batch: list[LedgerItem]) -> bool:
        delay = 0.05
        for attempt in range(1, self.attempts + 1):
            try:
                await self.db.run(lambda conn: _write_batch(conn, batch))
                return True
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then reported
                if attempt == self.attempts:
                    for item in batch:
                        r = item.record
                        log.error("LEDGER WRITE FAILED after %d attempts, kept in memory for retry: generation=%s "
                                  "key=%s model=%s tokens=%d+%d cost=%s %s status=%s: %r", attempt, r.id, item.label,
                                  r.model, r.prompt_tokens, r.completion_tokens, r.cost, r.currency, r.status, exc)
                    return False
                log.warning("ledger batch of %d failed (attempt %d): %r", len(batch), attempt, exc)
                await asyncio.sleep(delay)
                delay *= 4
        return False

    async def flush(self) -> None:
        """Wait until everything queued is committed; retry, once, what failed before."""
        if self._failed:
            self._queue[:0], self._failed = self._failed, []
        if self._queue:
            self._kick()
        if self._draining is not None and not self._draining.done():
            await asyncio.shield(self._draining)

    def flush_sync(self) -> None:
        """Write what is still queued or failed, from outside the event loop (shutdown in another loop)."""
        items, self._queue, self._failed = self._failed + self._queue, [], []
        if items:
            self.db.run_sync(lambda conn: _write_batch(conn, items))


def _write_batch(conn: Connection, batch: list[LedgerItem]) -> None:
    unique = list({item.record.id: item.record for item in batch}.values())
    # Per (owner, key): what leaves that lease row and ``reserved``; owner None: ``reserved`` only.
    releases: dict[tuple[str | None, int], Decimal] = defaultdict(Decimal)
    keys: set[int] = set()
    for item in batch:
        if item.key_id is not None:
            keys.add(item.key_id)
            if item.release:
                releases[(item.owner, item.key_id)] += item.release
    if conn.dialect.name == "postgresql":
        written = _write_batch_pg(conn, unique, releases, keys)
    else:
        written = _write_batch_generic(conn, batch, unique, releases, keys)
    for dup in {item.record.id for item in batch} - written:
        log.error("generation %s was already recorded; not charged again", dup)


def _write_batch_generic(conn: Connection, batch: list[LedgerItem], unique: list[GenerationRecord],
                         releases: dict[tuple[str | None, int], Decimal], keys: set[int]) -> set[str]:
    written = ledger.insert_generations(conn, unique)
    # Lease rows before key rows, each in one order: the lock order every writer follows (replicas.py).
    freed: dict[int, Decimal] = defaultdict(Decimal)
    for (owner, key_id), amount in sorted(releases.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        if owner is None or replicas.take_from_lease(conn, owner, key_id, amount):
            freed[key_id] += amount
    spent: dict[int, Decimal] = defaultdict(Decimal)
    charged: set[str] = set()
    for item in batch:
        if item.key_id is not None and item.record.id in written and item.record.id not in charged:
            spent[item.key_id] += item.record.cost
            charged.add(item.record.id)
    for key_id in sorted(keys):
        if spent[key_id] or freed[key_id]:
            credits.charge(conn, key_id, spent[key_id], freed[key_id])
    return written


# One round trip for a whole batch on PostgreSQL: the rows (arrays, unnest), the lease rows' releases (only
# from rows that still hold them: a reclaimed lease releases nothing), then each key's spend (only rows
# actually inserted count) and what left its lease rows. Rows are locked in the order every writer follows
# (replicas.py): lease rows by (replica, key), then key rows by id (``key_rows`` waits for ``freed``). Without
# the explicit FOR UPDATE ... ORDER BY, an UPDATE ... FROM locks in plan order (a seq scan: physical order,
# which every update changes) and two batches deadlock. Constant text: prepared once, never recompiled.
_PG_BATCH = text("""
WITH ins AS (
    INSERT INTO generations (id, key_hash, model, prompt_tokens, cached_tokens, completion_tokens,
                             reasoning_tokens, cost, currency, status, streamed, ttft_s, duration_s, created_at,
                             endpoint)
    SELECT * FROM unnest(CAST(:id AS text[]), CAST(:key_hash AS text[]), CAST(:model AS text[]),
                         CAST(:prompt AS int[]), CAST(:cached AS int[]), CAST(:completion AS int[]),
                         CAST(:reasoning AS int[]), CAST(:cost AS bigint[]), CAST(:currency AS text[]),
                         CAST(:status AS text[]), CAST(:streamed AS boolean[]), CAST(:ttft AS float8[]),
                         CAST(:duration AS float8[]), CAST(:created AS timestamptz[]), CAST(:endpoint AS text[]))
    ON CONFLICT (id) DO NOTHING
    RETURNING id, key_hash, cost
), r AS (
    SELECT * FROM unnest(CAST(:lease_owners AS text[]), CAST(:lease_keys AS int[]),
                         CAST(:lease_releases AS bigint[])) AS r(owner, key_id, release)
), lease_rows AS (
    SELECT l.replica_id, l.key_id FROM credit_leases AS l JOIN r ON l.replica_id = r.owner AND l.key_id = r.key_id
    ORDER BY l.replica_id, l.key_id FOR UPDATE OF l
), lease AS (
    UPDATE credit_leases AS l SET amount = l.amount - r.release
    FROM lease_rows JOIN r ON r.owner = lease_rows.replica_id AND r.key_id = lease_rows.key_id
    WHERE l.replica_id = lease_rows.replica_id AND l.key_id = lease_rows.key_id AND l.amount >= r.release
    RETURNING l.key_id, r.release
), freed AS (
    SELECT key_id, SUM(release) AS release FROM lease GROUP BY key_id
), key_rows AS (
    SELECT k.id FROM api_keys AS k
    WHERE k.id = ANY(CAST(:key_ids AS int[])) AND (SELECT COUNT(*) FROM freed) >= 0
    ORDER BY k.id FOR UPDATE
), upd AS (
    UPDATE api_keys AS k
    SET spent = k.spent + COALESCE((SELECT SUM(ins.cost) FROM ins WHERE ins.key_hash = k.key_hash), 0),
        reserved = k.reserved - m.release - COALESCE((SELECT freed.release FROM freed WHERE freed.key_id = k.id), 0)
    FROM key_rows JOIN unnest(CAST(:key_ids AS int[]), CAST(:releases AS bigint[])) AS m(key_id, release)
         ON m.key_id = key_rows.id
    WHERE k.id = key_rows.id
    RETURNING k.id
)
SELECT id FROM ins
""")


def _write_batch_pg(conn: Connection, unique: list[GenerationRecord],
                    releases: dict[tuple[str | None, int], Decimal], keys: set[int]) -> set[str]:
    """The whole batch in one statement (see _PG_BATCH)."""
    leased = sorted((owner, key_id, amount) for (owner, key_id), amount in releases.items() if owner is not None)
    direct = {key_id: amount for (owner, key_id), amount in releases.items() if owner is None}
    params = {
        "id": [r.id for r in unique], "key_hash": [r.key_hash for r in unique], "model": [r.model for r in unique],
        "prompt": [r.prompt_tokens for r in unique], "cached": [r.cached_tokens for r in unique],
        "completion": [r.completion_tokens for r in unique], "reasoning": [r.reasoning_tokens for r in unique],
        "cost": [to_units(r.cost) for r in unique], "currency": [r.currency for r in unique],
        "status": [ledger.check_status(r.status) for r in unique], "streamed": [r.streamed for r in unique],
        "ttft": [r.ttft_s for r in unique], "duration": [r.duration_s for r in unique],
        "created": [r.created_at for r in unique], "endpoint": [r.endpoint for r in unique],
        "lease_owners": [o for o, _, _ in leased], "lease_keys": [k for _, k, _ in leased],
        "lease_releases": [to_units(a) for _, _, a in leased],
        "key_ids": sorted(keys), "releases": [to_units(direct.get(k, Decimal(0))) for k in sorted(keys)],
    }
    return {row[0] for row in conn.execute(_PG_BATCH, params)}

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

from sqlalchemy import Connection

from qwen3_api.platform import credits, ledger
from qwen3_api.platform.db import Database
from qwen3_api.platform.ledger import GenerationRecord

log = logging.getLogger("qwen3_api.platform.ledger")


@dataclass(slots=True)
class LedgerItem:
    """One settlement: the row, and what moves on the key (spend, and lease consumed from ``reserved``)."""

    record: GenerationRecord
    key_id: int | None
    label: str
    release: Decimal = Decimal(0)
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
                # Cancelled mid-commit (loop shutting down): keep the rows for flush()/flush_sync().
                self._failed = batch + self._failed
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
    moves: dict[int, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    unique = list({item.record.id: item.record for item in batch}.values())
    written = ledger.insert_generations(conn, unique)
    for item in batch:
        inserted = item.record.id in written
        written.discard(item.record.id)  # a second item with the same id in this batch is a duplicate
        if not inserted:
            log.error("generation %s was already recorded; not charged again", item.record.id)
        if item.key_id is not None:
            move = moves[item.key_id]
            move[0] += item.record.cost if inserted else Decimal(0)
            move[1] += item.release
    for key_id, (spent, release) in moves.items():
        if spent or release:
            credits.charge(conn, key_id, spent, release)

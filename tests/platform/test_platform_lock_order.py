"""Concurrent settlement batches lock rows in one order, so PostgreSQL never has to break a deadlock.

An ``UPDATE ... FROM unnest(...)`` locks rows in plan order (for a small table, a seq scan: physical order,
which every update changes), so two batches touching the same keys could wait on each other; PostgreSQL
then aborts one after ``deadlock_timeout`` (1 s) and the writer retries. The batch statement now locks lease
rows by (replica, key) and key rows by id first. Runs on SQLite too (one writer: trivially passes).
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select

from qwen3_api.platform import replicas
from qwen3_api.platform.credits import reserve_leased
from qwen3_api.platform.db import Database
from qwen3_api.platform.keys import KeyStore
from qwen3_api.platform.ledger import GenerationRecord
from qwen3_api.platform.ledger_writer import LedgerItem, _write_batch
from qwen3_api.platform.tables import api_keys, credit_leases

THREADS, BATCHES, COST, RELEASE = 6, 20, Decimal("0.001"), Decimal("0.0001")


def test_concurrent_batches_over_the_same_keys_in_any_order_never_deadlock(db: Database) -> None:
    store = KeyStore(db)
    keys = [store.create(f"k{i}", credit=Decimal("100"))[1] for i in range(8)]
    owners = [f"replica:{i}:x" for i in range(THREADS)]  # each thread settles as another replica
    for owner in owners:
        db.run_sync(lambda conn, owner=owner: replicas.register(conn, owner))
        for k in keys:
            assert db.run_sync(lambda conn, k=k, owner=owner: reserve_leased(conn, owner, k.id, Decimal("1")))
    failures: list[BaseException] = []

    def settle_batches(owner: str) -> None:
        for _ in range(BATCHES):
            order = random.sample(keys, len(keys))
            batch = [LedgerItem(GenerationRecord(
                id=uuid.uuid4().hex, key_hash=k.key_hash, model="m", prompt_tokens=1, cached_tokens=0,
                completion_tokens=1, reasoning_tokens=0, cost=COST, currency="CNY", status="completed",
                streamed=False, ttft_s=None, duration_s=0.1, created_at=datetime.now(UTC)), k.id, k.label,
                release=RELEASE, owner=owner) for k in order]
            try:
                db.run_sync(lambda conn, batch=batch: _write_batch(conn, batch))
            except Exception as exc:  # noqa: BLE001 - collected: a deadlock here is the failure
                failures.append(exc)

    threads = [threading.Thread(target=settle_batches, args=(owner,)) for owner in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with db.engine.connect() as conn:
        spent = conn.execute(select(api_keys.c.spent, api_keys.c.reserved)).all()
        leases = conn.execute(select(credit_leases.c.amount)).scalars().all()
    left = 1 - BATCHES * RELEASE  # in each replica's lease of each key
    assert spent == [(THREADS * BATCHES * COST, THREADS * left)] * len(keys)
    assert leases == [left] * (THREADS * len(keys))

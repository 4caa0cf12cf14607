"""Replica rows that heartbeat, the credit-lease rows they own, and reclaiming the leases of replicas that died.

Every server process (a *replica*, see credits.CreditLeases) registers a row in ``replicas`` and keeps one
``credit_leases`` row per key it leases credit for. Every statement that moves ``api_keys.reserved`` for a
lease moves its lease row in the same transaction, so at every commit, per key, ``reserved`` is the sum of
its lease rows' amounts.

Liveness is judged by the database's clock (``db_now``), never a host's: a replica heartbeats every few
seconds, and one whose heartbeat is older than the expiry is dead. Any replica (periodically, and at
start-up) reclaims a dead one in one transaction:

    DELETE FROM replicas WHERE id = :dead AND heartbeat < now - :expiry      -- the decision, under the row lock
    DELETE FROM credit_leases WHERE replica_id = :dead RETURNING key_id, amount
    UPDATE api_keys SET reserved = reserved - :amount WHERE id = :key_id     -- never below zero

Why each lease is released exactly once, on SQLite and PostgreSQL alike:
- a replica writes its lease rows only in transactions that first touched its own replica row (``touch``),
  and every transaction locks in one order: replica row, then lease rows, then key rows;
- two replicas reclaiming the same dead one: the second finds the replica row and the lease rows deleted
  (PostgreSQL makes it wait for the first to commit and then skips them; SQLite has one writer): it releases
  nothing;
- a paused replica waking up races the reclaim on its replica row: either its heartbeat lands first and the
  reclaim's DELETE, re-checking the heartbeat, deletes nothing; or the reclaim lands first and the heartbeat
  updates no row: the replica learns it lost its leases (``LeaseLost``) and goes on as a new replica;
- settlements and returns take from a lease row only while it exists and holds enough (``take_from_lease``),
  and release from ``reserved`` only what they took: after a reclaim they record spend only.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Connection, Float, case, delete, func, insert, literal, literal_column, select, update
from sqlalchemy.sql.elements import ColumnElement

from qwen3_api.platform.db import Database
from qwen3_api.platform.tables import Money, api_keys, credit_leases, replicas


class LeaseLost(Exception):
    """The replica's row is gone: another replica reclaimed its leases after it missed heartbeats too long."""

    def __init__(self, replica_id: str) -> None:
        super().__init__(f"replica {replica_id} was reclaimed (its leases are released)")
        self.replica_id = replica_id


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """A lease given back on behalf of a replica that stopped heartbeating (or retired)."""

    replica_id: str
    host: str | None
    pid: int | None
    silent_s: float | None  # how long it had not heartbeat; None when its row was already gone
    key_id: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Holder:
    """A replica holding a lease of a key (``keys reset-reserved`` shows them)."""

    replica_id: str
    host: str | None
    pid: int | None
    amount: Decimal
    silent_s: float | None  # None: no replica row (the lease is an orphan, reclaimed at the next sweep)

    def alive(self, expiry_s: float) -> bool:
        return self.silent_s is not None and self.silent_s <= expiry_s


def new_replica_id() -> str:
    """A fresh id: host and pid for the operator, random so a restarted or reclaimed replica never reuses one."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def db_now(conn: Connection) -> ColumnElement[float]:
    """The database's clock, in seconds since the epoch (millisecond resolution on SQLite)."""
    if conn.dialect.name == "postgresql":
        return literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS double precision)", Float)
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)


def _money(amount: Decimal):  # noqa: ANN202 - a SQL bind parameter typed as Money
    return literal(Decimal(amount), Money())


def register(conn: Connection, replica_id: str) -> None:
    """Add this replica's row (its first heartbeat)."""
    conn.execute(insert(replicas).values(id=replica_id, host=socket.gethostname()[:255], pid=os.getpid(),
                                         started_at=datetime.now(UTC), heartbeat=db_now(conn)))


def touch(conn: Connection, replica_id: str) -> None:
    """Heartbeat; raises LeaseLost when the row is gone (reclaimed). Locks the row until the transaction ends."""
    result = conn.execute(update(replicas).where(replicas.c.id == replica_id).values(heartbeat=db_now(conn)))
    if result.rowcount != 1:
        raise LeaseLost(replica_id)


def add_to_lease(conn: Connection, replica_id: str, key_id: int, amount: Decimal) -> None:
    """``amount`` more in the replica's lease of the key (the caller reserves it in the same transaction)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    stmt = upsert(credit_leases).values(replica_id=replica_id, key_id=key_id, amount=amount)
    conn.execute(stmt.on_conflict_do_update(index_elements=[credit_leases.c.replica_id, credit_leases.c.key_id],
                                            set_={"amount": credit_leases.c.amount + _money(amount)}))


def take_from_lease(conn: Connection, replica_id: str, key_id: int, amount: Decimal) -> bool:
    """Take ``amount`` out of the lease; False (nothing changed) when it was reclaimed or holds less."""
    amount_col = _money(amount)
    result = conn.execute(update(credit_leases)
                          .where(credit_leases.c.replica_id == replica_id, credit_leases.c.key_id == key_id,
                                 credit_leases.c.amount >= amount_col)
                          .values(amount=credit_leases.c.amount - amount_col))
    return result.rowcount == 1


def unreserve(conn: Connection, key_id: int, amount: Decimal) -> None:
    """``reserved -= amount``, clamped at zero: a reclaim must never leave a key with negative reservations."""
    amount_col = _money(amount)
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(
        reserved=case((api_keys.c.reserved >= amount_col, api_keys.c.reserved - amount_col), else_=_money(0))))


def reclaim(conn: Connection, replica_id: str, expiry_s: float | None) -> list[Reclaimed]:
    """Release every lease of ``replica_id`` and delete its row, if it has not heartbeat for ``expiry_s``.

    ``expiry_s=None``: unconditionally (a replica retiring at shutdown, or an operator's ``--force``).
    """
    where = [replicas.c.id == replica_id]
    if expiry_s is not None:
        where.append(replicas.c.heartbeat < db_now(conn) - expiry_s)
    gone = conn.execute(delete(replicas).where(*where).returning(
        replicas.c.host, replicas.c.pid, (db_now(conn) - replicas.c.heartbeat).label("silent_s"))).first()
    if gone is None and conn.execute(select(replicas.c.id).where(replicas.c.id == replica_id)).first():
        return []  # it heartbeat in time
    rows = conn.execute(delete(credit_leases).where(credit_leases.c.replica_id == replica_id)
                        .returning(credit_leases.c.key_id, credit_leases.c.amount)).all()
    out = []
    for key_id, amount in sorted(rows):  # key rows in one order, as every writer locks them
        if amount:
            unreserve(conn, key_id, amount)
            out.append(Reclaimed(replica_id, gone.host if gone else None, gone.pid if gone else None,
                                 float(gone.silent_s) if gone else None, key_id, amount))
    return out


def reclaim_expired(db: Database, expiry_s: float, *, exclude: str | None = None) -> list[Reclaimed]:
    """Reclaim every replica silent for more than ``expiry_s`` (and leases whose replica row is gone).

    One transaction per dead replica, so one that heartbeats just in time only spares itself.
    """
    def candidates(conn: Connection) -> list[str]:
        dead = conn.execute(select(replicas.c.id).where(replicas.c.heartbeat < db_now(conn) - expiry_s))
        orphans = conn.execute(select(credit_leases.c.replica_id).distinct()
                               .where(credit_leases.c.replica_id.not_in(select(replicas.c.id))))
        return sorted({*dead.scalars(), *orphans.scalars()} - {exclude})

    out: list[Reclaimed] = []
    for replica_id in db.run_sync(candidates):
        out += db.run_sync(lambda conn, rid=replica_id: reclaim(conn, rid, expiry_s))
    return out


def holders(conn: Connection, key_id: int) -> list[Holder]:
    """Who holds a non-empty lease of the key, and how long since each last heartbeat."""
    rows = conn.execute(
        select(credit_leases.c.replica_id, replicas.c.host, replicas.c.pid, credit_leases.c.amount,
               (db_now(conn) - replicas.c.heartbeat).label("silent_s"))
        .select_from(credit_leases.outerjoin(replicas, replicas.c.id == credit_leases.c.replica_id))
        .where(credit_leases.c.key_id == key_id, credit_leases.c.amount > _money(0))
        .order_by(credit_leases.c.replica_id))
    return [Holder(r.replica_id, r.host, r.pid, r.amount, None if r.silent_s is None else float(r.silent_s))
            for r in rows]


def reset_to_leases(conn: Connection, key_id: int) -> Decimal:
    """Set the key's ``reserved`` to the sum of its lease rows: frees what no lease accounts for.

    The key row is locked first (a no-op UPDATE): every writer of a lease row of this key writes the key row
    later in its transaction, so the sum read next is consistent with the value written.
    """
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(reserved=api_keys.c.reserved))
    total = conn.execute(select(func.coalesce(func.sum(credit_leases.c.amount), _money(0)))
                         .where(credit_leases.c.key_id == key_id)).scalar_one()
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(reserved=_money(total)))
    return Decimal(total)

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
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Connection, update

from qwen3_api.platform.tables import Money, api_keys


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
    from sqlalchemy import literal

    return literal(Decimal(amount), Money())

"""Alembic environment: migrations run on the connection the platform hands over (see db.Database.upgrade)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through qwen3_api.platform.db.Database.upgrade()")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()

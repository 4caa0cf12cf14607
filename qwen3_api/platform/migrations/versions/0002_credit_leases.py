"""Replicas that heartbeat and the credit leases they hold, so a dead replica's leases can be reclaimed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),  # epoch seconds, the database's clock
    )
    # No foreign keys: a lease row outlives neither its replica nor its key in practice, and reclaiming must
    # read what it deletes (DELETE ... RETURNING), which a cascade would hide. Money is BIGINT units of 1e-10.
    op.create_table(
        "credit_leases",
        sa.Column("replica_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.Integer, primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_credit_leases_key_id", "credit_leases", ["key_id"])


def downgrade() -> None:
    op.drop_table("credit_leases")
    op.drop_table("replicas")

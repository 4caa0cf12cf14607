"""The ledger records each generation's endpoint; stored Responses API objects (issue 14).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable without a default: rows written before this revision do not know their route, and saying
    # "/v1/chat/completions" for them would be a guess recorded as a fact.
    op.add_column("generations", sa.Column("endpoint", sa.String(64), nullable=True))
    op.create_table(
        "responses",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("input_items", sa.Text, nullable=False),
        sa.Column("conversation", sa.Text, nullable=False),
    )
    op.create_index("ix_responses_key_hash", "responses", ["key_hash"])


def downgrade() -> None:
    op.drop_table("responses")
    with op.batch_alter_table("generations") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("endpoint")

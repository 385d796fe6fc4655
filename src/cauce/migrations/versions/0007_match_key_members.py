"""Leads: a blocking key's members read from its index alone.

Intake reads, for each blocking key of its arrivals, the leads filed under it. The index
on `key` alone held the row's address, not its `lead_id`, so every member cost a lookup
in the table (SQLite) or the heap (PostgreSQL). The index on `(key, lead_id)` answers
from the index, and gives the members lowest id first.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Replace the index on `key` with one on `(key, lead_id)`."""
    with op.batch_alter_table("lead_match_keys", schema=None) as batch_op:
        batch_op.create_index("ix_lead_match_keys_key_lead_id", ["key", "lead_id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_lead_match_keys_key"))


def downgrade() -> None:
    """Back to the index on `key` alone."""
    with op.batch_alter_table("lead_match_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_match_keys_key"), ["key"], unique=False)
        batch_op.drop_index("ix_lead_match_keys_key_lead_id")

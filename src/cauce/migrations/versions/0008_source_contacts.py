"""Leads: each arrival keeps the email and phone it brought.

A merge keeps the stored lead's email and phone. An arrival with another address (a
fuzzy match, or the same phone with a new email) lost its own: it was not kept anywhere.
Each `lead_sources` row now records the email and phone its arrival sent, so the lead's
other contacts are shown with it, and erasure clears them with the rest.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `email` and `phone` to `lead_sources` (empty for the arrivals already kept)."""
    with op.batch_alter_table("lead_sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("phone", sa.String(length=20), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("lead_sources", schema=None) as batch_op:
        batch_op.drop_column("phone")
        batch_op.drop_column("email")

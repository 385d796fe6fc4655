"""Held leads keep why they were held: `leads.hold_evidence`.

A lead held for review showed the reviewer only the lead it was held against; the match
kind, the confidence and the comparison's reasons (`held: only names and places agree`)
were in the intake's answer alone, which a web form's key never sees. The new nullable
JSON column keeps them while the lead is held. Leads held before this revision have none
(their detail says so); no value is rebuilt, since the comparison depended on the
candidates of that moment.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMN = "hold_evidence"


def upgrade() -> None:
    """Add the nullable `hold_evidence` column to leads."""
    op.add_column("leads", sa.Column(_COLUMN, sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    """Drop the column (on SQLite with `ALTER TABLE ... DROP COLUMN`, as 0018 does)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE leads DROP COLUMN {_COLUMN}")
    else:
        op.drop_column("leads", _COLUMN)

"""Traces: each lead keeps the traceparent of the work that last made it pending.

Deliveries coalesce (one job per CRM account sends the pending leads of many requests),
so the delivery job's trace was the trace of whichever request deferred it first, and
the other leads' traces stopped at their intake. `leads.trace_parent` (nullable) holds
the W3C traceparent of the span that last made the lead pending; the span around each
CRM call links to those of the leads it sends. Stored leads have none until they change.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMN = "trace_parent"


def upgrade() -> None:
    """Add the nullable `trace_parent` column to leads."""
    op.add_column("leads", sa.Column(_COLUMN, sa.String(length=55), nullable=True))


def downgrade() -> None:
    """Drop the column (on SQLite with `ALTER TABLE ... DROP COLUMN`, as 0016 does)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE leads DROP COLUMN {_COLUMN}")
    else:
        op.drop_column("leads", _COLUMN)

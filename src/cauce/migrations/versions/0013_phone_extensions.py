"""Phone extensions: a lead's `phone` may have one, kept beside the E.164 number.

Before this, a phone with an extension (`+34 91 123 45 67 ext. 123`) was refused, its
lead with it: E.164 has no place for an extension. Now `leads.phone_extension` holds its
digits, and each arrival's own (`lead_sources.phone_extension`) stays with that arrival.
Existing rows have none.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("leads", "lead_sources")


def upgrade() -> None:
    """Add `phone_extension` (nullable, up to 10 digits) to leads and their arrivals."""
    for table in _TABLES:
        op.add_column(table, sa.Column("phone_extension", sa.String(length=10), nullable=True))


def downgrade() -> None:
    """Drop the columns (the extensions with them). On SQLite with `ALTER TABLE ... DROP
    COLUMN`: a batch operation would copy each table and drop the old one, and with
    foreign keys on, dropping `leads` would delete every lead's sources and history."""
    for table in _TABLES:
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN phone_extension")
        else:
            op.drop_column(table, "phone_extension")

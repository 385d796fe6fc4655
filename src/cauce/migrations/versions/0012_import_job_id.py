"""CSV imports: each import keeps the id of the job that runs it.

An import whose job failed for good or was cancelled stayed `queued` or `running` until
the job was purged, days later. With the job's id on the row, the import's status reads
that job and answers `failed` (saying how to replay it) while it is stopped. The imports
recorded before this have no id and answer as before: nothing is filled in for them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `lead_imports.job_id` (nullable, no foreign key: the job table is the engine's)."""
    op.add_column("lead_imports", sa.Column("job_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop the column. On SQLite with `ALTER TABLE ... DROP COLUMN`: a batch operation
    would copy the table and drop the old one, and with foreign keys on, that drop deletes
    every import's error report with it."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE lead_imports DROP COLUMN job_id")
    else:
        op.drop_column("lead_imports", "job_id")

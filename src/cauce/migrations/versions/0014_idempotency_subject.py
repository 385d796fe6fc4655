"""Stored idempotent answers name the record they show, so its erasure deletes them.

`POST /v1/leads/{id}/review` answers with the lead's view, contact data included, and
that answer was kept under its `Idempotency-Key` for 24 hours even after the lead was
erased. `idempotency_keys.subject` (indexed) now holds the id of the lead an answer
shows; an erasure deletes the answers about it. Answers stored before this have none
(they expire within a day of the upgrade).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_idempotency_keys_subject"


def upgrade() -> None:
    """Add the nullable, indexed `subject` column."""
    op.add_column("idempotency_keys", sa.Column("subject", sa.String(length=64), nullable=True))
    op.create_index(_INDEX, "idempotency_keys", ["subject"], unique=False)


def downgrade() -> None:
    """Drop the index and the column (SQLite: `ALTER TABLE ... DROP COLUMN`, no copy)."""
    op.drop_index(_INDEX, table_name="idempotency_keys")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE idempotency_keys DROP COLUMN subject")
    else:
        op.drop_column("idempotency_keys", "subject")

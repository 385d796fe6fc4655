"""Idempotency keys can be claimed by a request building its answer in parts.

A large `POST /v1/leads/batch` commits its leads in several transactions
(`leads.batch_transaction_size`), so single leads are not kept waiting for the whole
batch. Its `Idempotency-Key` is claimed first (`owner`, the claiming request's token,
and `leased_until`); each part stores the answer so far, the last one the whole answer.
A retry of a batch that stopped takes the claim over once the lease ends and goes on
from the last part stored. Rows stored before have neither (whole answers).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "idempotency_keys"
_COLUMNS = ("owner", "leased_until")


def upgrade() -> None:
    """Add the nullable `owner` and `leased_until` columns."""
    op.add_column(_TABLE, sa.Column("owner", sa.String(length=32), nullable=True))
    op.add_column(_TABLE, sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop them (SQLite: `ALTER TABLE ... DROP COLUMN`, as 0014 does), and first the
    answers still being built: without their owner they would read as whole answers."""
    op.execute("DELETE FROM idempotency_keys WHERE owner IS NOT NULL")
    for column in _COLUMNS:
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {_TABLE} DROP COLUMN {column}")
        else:
            op.drop_column(_TABLE, column)

"""Intake locks its exact keys with rows instead of advisory locks.

On PostgreSQL an intake (a group of single leads, a batch or a part of one, an import
chunk, a PATCH of an email or phone, a review) first locks the email, phone and tax id
keys it carries, so two processes taking in one new email at once give one lead. The
locks were advisory locks, one slot each of the server's shared lock table, so an intake
with more than 128 keys (a batch) took one exclusive lock on all of them instead, and
batches ran one at a time across every process. Now each key's lock is a row of
`lead_key_locks` (its 64-bit hash, never the key), inserted and deleted again at once
by the intake's transaction; another intake inserting it waits until that transaction
ends. The table is empty outside those statements, so on PostgreSQL it is unlogged (no
WAL; a crash empties it, which it is anyway). Intakes that share no key run side by side
whatever their size.

Upgrade every process before taking in leads: a process still on advisory locks does not
wait for one on rows.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "lead_key_locks"


def upgrade() -> None:
    """Create the (empty) table; unlogged on PostgreSQL."""
    op.create_table(
        _TABLE,
        sa.Column("h", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("h", name=op.f("pk_lead_key_locks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {_TABLE} SET UNLOGGED")


def downgrade() -> None:
    """Drop it."""
    op.drop_table(_TABLE)

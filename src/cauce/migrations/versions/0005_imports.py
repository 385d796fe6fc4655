"""CSV imports: held rows, the import options and when processing started.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 11:06:35.912619
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    with op.batch_alter_table("lead_imports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rows_held", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("options", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(
            sa.Column("bytes_read", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("lead_imports", schema=None) as batch_op:
        batch_op.drop_column("started_at")
        batch_op.drop_column("options")
        batch_op.drop_column("rows_held")
        batch_op.drop_column("bytes_read")

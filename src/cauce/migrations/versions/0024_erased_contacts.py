"""People erased (GDPR) whom an imported file must not bring back: `erased_contacts`.

An erasure removed every trace of the person, so the next import of an old list holding
their email created them again, marketing consent and all. The table keeps, for each
erased lead, keyed hashes of its email and phone (HMAC-SHA256 under the installation's
`secret_key`, never the address or the number) and when it was erased; an import's rows
carrying one are refused. Leads erased before this revision have none: their data is
gone, so nothing can be rebuilt.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "erased_contacts"


def upgrade() -> None:
    """Create the table of keyed hashes."""
    op.create_table(
        _TABLE,
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_erased_contacts")),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table(_TABLE)

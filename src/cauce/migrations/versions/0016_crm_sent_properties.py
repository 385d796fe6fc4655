"""CRM sync: a field cleared in Cauce is cleared in the CRM, and only such a field.

A contact was sent without its empty fields, so clearing one (`PATCH {"city": null}`)
left the old value in the CRM while the lead showed `synced`. Sending every mapped
property empty instead would wipe what salespeople typed in the CRM for fields Cauce
never had. `leads.crm_sent_properties` (a JSON list, nullable) now holds the CRM
properties the lead's last successful sync gave a value; a later sync sends those whose
field is empty as cleared and leaves every other property alone. Stored leads have none
(null: not known): which properties their past syncs carried depends on the field
mapping of the day, so nothing is cleared for them until they have been synced once more.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMN = "crm_sent_properties"


def upgrade() -> None:
    """Add the nullable `crm_sent_properties` JSON column to leads."""
    op.add_column("leads", sa.Column(_COLUMN, sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the column. On SQLite with `ALTER TABLE ... DROP COLUMN`: a batch operation
    would copy `leads` and drop the old table, and with foreign keys on that deletes every
    lead's sources and history (see 0013)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE leads DROP COLUMN {_COLUMN}")
    else:
        op.drop_column("leads", _COLUMN)

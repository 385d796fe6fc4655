"""CRM delivery: a Pipedrive create in flight or in doubt has columns of its own.

Pipedrive has no upsert: a create whose answer is lost may have made the person while
its search cannot show it yet, so the lead is not searched for nor created again for a
while (`leads.delivery`). Those marks were kept as entries of `crm_sent_properties`
("#create in flight", "#create in doubt since <time>"), whose meaning is the CRM
properties the last sync gave a value. They now have two nullable columns:
`crm_create_sent_at` (a create marked in flight since, right before it left) and
`crm_create_doubt_at` (a create in doubt since). The entries of the old form are taken
out of `crm_sent_properties` (never released: none should exist); their leads are sent
as any other.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("crm_create_sent_at", "crm_create_doubt_at")

# The old marks' entries taken out of the JSON list, its order kept.
_STRIP = {
    "sqlite": """
        UPDATE leads SET crm_sent_properties = (
            SELECT json_group_array(entry.value) FROM (
                SELECT value FROM json_each(leads.crm_sent_properties)
                WHERE value NOT LIKE '#create %' ORDER BY key
            ) AS entry
        )
        WHERE crm_sent_properties LIKE '%"#create %'
    """,
    "postgresql": """
        UPDATE leads SET crm_sent_properties = (
            SELECT coalesce(json_agg(entry ORDER BY n), '[]'::json)
            FROM json_array_elements_text(leads.crm_sent_properties) WITH ORDINALITY
                AS t(entry, n)
            WHERE entry NOT LIKE '#create %'
        )
        WHERE crm_sent_properties::text LIKE '%"#create %'
    """,
}


def upgrade() -> None:
    """Add the two nullable timestamp columns; take the old marks out of the list."""
    for column in _COLUMNS:
        op.add_column("leads", sa.Column(column, sa.DateTime(timezone=True), nullable=True))
    op.execute(_STRIP[op.get_bind().dialect.name])


def downgrade() -> None:
    """Drop the columns (the marks they hold are lost: at worst a lead in doubt is sent
    at once). On SQLite with `ALTER TABLE ... DROP COLUMN`: a batch operation would copy
    `leads` and drop the old table, and with foreign keys on that deletes every lead's
    sources and history (see 0013)."""
    for column in reversed(_COLUMNS):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE leads DROP COLUMN {column}")
        else:
            op.drop_column("leads", column)

"""Leads: the leads held against a lead found by index (`ix_leads_possible_duplicate_of`).

`GET /v1/leads/{id}` lists the leads held for review against the lead it shows
(`repository_lead.related_duplicates`, `held_against_count`), and a review's merge moves
them to the lead it merges into (`held_against`, `hold_against`). Nothing indexed
`possible_duplicate_of`, so each of these read every lead: 88 ms for one lead's view at
100,000 leads on SQLite, growing with the table (benchmarks/leads_read_scale.py). The
index answers them from the few held leads (PostgreSQL does not index a foreign key by
itself either; its `ON DELETE SET NULL` now finds the referencing rows by it too).

Created in the upgrade's transaction, as every index here (no `CONCURRENTLY`, which
cannot run in one): on PostgreSQL it blocks writes to `leads` while it builds, about a
second at 500,000 leads.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_leads_possible_duplicate_of"


def upgrade() -> None:
    """Index `leads.possible_duplicate_of`."""
    op.create_index(_INDEX, "leads", ["possible_duplicate_of"], unique=False)


def downgrade() -> None:
    """Drop the index."""
    op.drop_index(_INDEX, table_name="leads")

"""Leads, PostgreSQL: free-text search by a trigram index (`ix_leads_search_text_trgm`).

`GET /v1/leads?q=` finds each word anywhere in `leads.search_text` (`LIKE '%word%'`).
A common word is found walking the leads newest first (50 hits come early), but a rare
one (a mailbox, a phone's digits, a word nobody has) read every lead: 300-360 ms at
500,000 leads, growing with the table (benchmarks/leads_read_scale.py). A GIN index of
`pg_trgm` trigrams answers such a `LIKE` from the index: 0.2-7 ms at 500,000, while the
planner still walks newest first for common words.

`pg_trgm` ships with PostgreSQL and is a trusted extension (13+): the database's owner
may create it. Where the migration's user cannot (no `CREATE` on the database, a server
without the contrib package), the index is left out with a warning and search works as
before; a superuser can add both later (docs/deployment.md). SQLite: nothing (search
there stays a scan; its deployments are the small ones).

Built in the upgrade's transaction, as every index here: on PostgreSQL it blocks writes to
`leads` while it builds, ~11 s at 500,000 leads.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_leads_search_text_trgm"
log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    """Create `pg_trgm` if it can be, and the index with it (PostgreSQL only)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():  # a savepoint: a refusal leaves the upgrade going
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning(
            "pg_trgm is not available (%s): free-text search keeps scanning the leads; "
            "see docs/deployment.md to add the index later",
            str(exc.orig or exc).splitlines()[0],
        )
        return
    bind.execute(
        sa.text(f"CREATE INDEX IF NOT EXISTS {INDEX} ON leads USING gin (search_text gin_trgm_ops)")
    )


def downgrade() -> None:
    """Drop the index (the extension stays: it may serve others)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(f"DROP INDEX IF EXISTS {INDEX}"))

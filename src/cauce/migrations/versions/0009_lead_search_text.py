"""Leads: free-text search that ignores accents, case and punctuation.

`GET /v1/leads?q=` compared `lower(column)` with the query, so `garcia` did not find
García, and SQLite's `lower()` folds ASCII letters only (`GARCÍA` found nothing there
while PostgreSQL found it). `leads.search_text` holds the searched fields folded once
(`models.search_text_of`); this fills it for the leads already stored, in chunks.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 2000
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def _fold(text: str) -> str:
    # `matching.record.fold` as it is today, frozen here so that this migration fills
    # the column the same way whatever that function becomes.
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", stripped.casefold()).strip()


def upgrade() -> None:
    """Add `leads.search_text` and fill it."""
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("search_text", sa.Text(), server_default="", nullable=False))
    bind = op.get_bind()
    read = sa.text(
        "SELECT id, first_name, last_name, company, email FROM leads"
        " WHERE id > :after AND erased_at IS NULL ORDER BY id LIMIT :n"
    )
    write = sa.text("UPDATE leads SET search_text = :text WHERE id = :id")
    after = 0
    while rows := bind.execute(read, {"after": after, "n": _CHUNK}).all():
        params = [{"id": row[0], "text": _fold(" ".join(v for v in row[1:] if v))} for row in rows]
        bind.execute(write, params)
        after = rows[-1][0]


def downgrade() -> None:
    """Drop the column (on SQLite with `ALTER TABLE ... DROP COLUMN`: a batch operation
    copies the table and drops the old one, and with foreign keys on that drop deletes
    every arrival, key and history line with it)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE leads DROP COLUMN search_text")
    else:
        op.drop_column("leads", "search_text")

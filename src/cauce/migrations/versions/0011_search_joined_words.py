"""Leads: free-text search finds a word punctuation splits by its letters run together.

Since 0009 `leads.search_text` folds punctuation to spaces, so "O'Brien S.L." was
searchable as `o brien s l`: `o'brien` and `s.l.` found it, `obrien` and `sl` did not,
though the docs say punctuation does not matter. `models.search_text` now adds each such
word joined ("obrien", "sl"); this refills the column for the leads already stored, in
chunks, and the downgrade puts back 0009's form.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

import re
import unicodedata
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 2000
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def _fold(text: str) -> str:
    # `matching.record.fold` as it is today (and as 0009 froze it), frozen here too.
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", stripped.casefold()).strip()


def _joined(text: str) -> str:
    # `models.search_text` as it is today, frozen.
    joined = ["".join(words) for token in text.split() if len(words := _fold(token).split()) > 1]
    return " ".join([_fold(text), *joined]) if joined else _fold(text)


def _refill(form: Callable[[str], str]) -> None:
    bind = op.get_bind()
    read = sa.text(
        "SELECT id, first_name, last_name, company, email FROM leads"
        " WHERE id > :after AND erased_at IS NULL ORDER BY id LIMIT :n"
    )
    write = sa.text("UPDATE leads SET search_text = :text WHERE id = :id")
    after = 0
    while rows := bind.execute(read, {"after": after, "n": _CHUNK}).all():
        params = [{"id": row[0], "text": form(" ".join(v for v in row[1:] if v))} for row in rows]
        bind.execute(write, params)
        after = rows[-1][0]


def upgrade() -> None:
    """Refill `leads.search_text` with the joined words."""
    _refill(_joined)


def downgrade() -> None:
    """Refill it as 0009 did."""
    _refill(_fold)

"""Leads: free-text search finds a lead by its phone and its other emails and phones.

`GET /v1/leads?q=` read name, company and email only. A person who asks what is held
about them gives an email or a phone; a merge may have kept theirs among another lead's
other contacts (`other_emails`, `other_phones`), and the phone was never searched at all,
so the answer was "nothing" while the export still showed it. `models.SEARCHED` now
includes `phone`, `other_emails` and `other_phones`; this refills `leads.search_text`
for the leads already stored, in chunks, and the downgrade puts back 0011's form.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 2000
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_BEFORE = ("first_name", "last_name", "company", "email")
_AFTER = (*_BEFORE, "phone", "other_emails", "other_phones")


def _fold(text: str) -> str:
    # `matching.record.fold` as it is today (and as 0009 and 0011 froze it).
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", stripped.casefold()).strip()


def _search_text(text: str) -> str:
    # `models.search_text` as it is today (0011's form), frozen.
    joined = ["".join(words) for token in text.split() if len(words := _fold(token).split()) > 1]
    return " ".join([_fold(text), *joined]) if joined else _fold(text)


def _refill(columns: Sequence[str]) -> None:
    bind = op.get_bind()
    read = sa.text(
        f"SELECT id, {', '.join(columns)} FROM leads"  # noqa: S608 - fixed column names
        " WHERE id > :after AND erased_at IS NULL ORDER BY id LIMIT :n"
    )
    write = sa.text("UPDATE leads SET search_text = :text WHERE id = :id")
    after = 0
    while rows := bind.execute(read, {"after": after, "n": _CHUNK}).all():
        params = [
            {"id": row[0], "text": _search_text(" ".join(v for v in row[1:] if v))} for row in rows
        ]
        bind.execute(write, params)
        after = rows[-1][0]


def upgrade() -> None:
    """Refill `leads.search_text` with the phone and the other contacts too."""
    _refill(_AFTER)


def downgrade() -> None:
    """Refill it as 0011 did."""
    _refill(_BEFORE)

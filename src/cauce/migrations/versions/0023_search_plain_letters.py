"""Leads: search reads ł, ø, æ, œ, đ, ð, þ, dotless i... as the plain letters typed for them.

Unicode gives these letters no decomposition, so the search text's fold dropped them:
Łukasz was stored as `ukasz` and Søren as `s ren`, and `q=lukasz` or `q=soren` found
nobody. `models.search_fold` now keeps each as its plain letter(s); this refills
`leads.search_text` of the stored leads whose searched fields hold one, in chunks. The
downgrade puts back 0015's form for those leads.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

import re
import unicodedata
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 2000
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_SEARCHED = ("first_name", "last_name", "company", "email", "phone", "other_emails", "other_phones")
# `models._PLAIN_LETTERS` as it is today, frozen.
_PLAIN = {
    "ł": "l",
    "ø": "o",
    "æ": "ae",
    "œ": "oe",
    "đ": "d",
    "ð": "d",
    "þ": "th",
    "\u0131": "i",  # dotless i
    "ħ": "h",
    "ŧ": "t",
    "ŋ": "n",
    "ĸ": "k",
    "ŀ": "l",
}
_PLAIN_LETTERS = str.maketrans(_PLAIN)
# Any of them, in either case, marks a lead whose search text changes.
_HAS_ONE = re.compile("[" + "".join(sorted({*_PLAIN, *(c.upper() for c in _PLAIN)})) + "]")


def _fold(text: str) -> str:
    # `matching.record.fold` as it is today (and as 0009, 0011 and 0015 froze it).
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", stripped.casefold()).strip()


def _plain_fold(text: str) -> str:
    # `models.search_fold` as it is today, frozen.
    return _fold(text.casefold().translate(_PLAIN_LETTERS))


def _search_text(text: str, fold: Callable[[str], str]) -> str:
    # `models.search_text` (0011's form) with `fold`, frozen.
    joined = ["".join(words) for token in text.split() if len(words := fold(token).split()) > 1]
    return " ".join([fold(text), *joined]) if joined else fold(text)


def _refill(fold: Callable[[str], str]) -> None:
    bind = op.get_bind()
    read = sa.text(
        f"SELECT id, {', '.join(_SEARCHED)} FROM leads"  # noqa: S608 - fixed column names
        " WHERE id > :after AND erased_at IS NULL ORDER BY id LIMIT :n"
    )
    write = sa.text("UPDATE leads SET search_text = :text WHERE id = :id")
    after = 0
    while rows := bind.execute(read, {"after": after, "n": _CHUNK}).all():
        params = []
        for row in rows:
            text = " ".join(v for v in row[1:] if v)
            if _HAS_ONE.search(text):
                params.append({"id": row[0], "text": _search_text(text, fold)})
        if params:
            bind.execute(write, params)
        after = rows[-1][0]


def upgrade() -> None:
    """Refill `leads.search_text` where a searched field holds one of the letters."""
    _refill(_plain_fold)


def downgrade() -> None:
    """Refill it there as 0015 did."""
    _refill(_fold)

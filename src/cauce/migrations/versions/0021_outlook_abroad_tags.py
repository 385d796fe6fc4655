"""Email match keys fold "+tag" at Outlook.com's domains under a country's domain.

`x+news@hotmail.com.mx` and `x@hotmail.com.mx` are one mailbox, as `x+news@hotmail.com`
and `x@hotmail.com` always were, but only hotmail.com, hotmail.es, outlook.com,
outlook.es, live.com and msn.com had "+tag" folded in their email match key, so the two
gave two leads (found by an audit of Latin American emails). Match keys are computed at
intake and stored (`lead_match_keys`), so a lead stored before this revision under a
tagged address gets the folded key too; the tagged one stays, matching what it matched.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As `cauce.leads.matching._lexicon.PLUS_TAG_ABROAD` was at this revision.
_ABROAD = re.compile(
    r"(?:hotmail|outlook|live|msn)\.(?:com?\.)?"
    r"(?:es|pt|ad|mx|gt|hn|sv|ni|cr|pa|cu|do|pr|co|ve|ec|pe|bo|cl|ar|uy|py|br"
    r"|us|ca|uk|fr|it|de|be|nl|ch)"
)
_BATCH = 1000


def upgrade() -> None:
    """Add the folded key beside each tagged one at those domains."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT lead_id, key FROM lead_match_keys WHERE key LIKE 'e:%+%@%'")
    ).all()
    folded = []
    for lead_id, key in rows:
        local, _, domain = key[2:].rpartition("@")
        if _ABROAD.fullmatch(domain) and (mailbox := local.split("+", 1)[0]):
            folded.append({"lead_id": lead_id, "key": f"e:{mailbox}@{domain}"})
    insert = sa.text(
        "INSERT INTO lead_match_keys (lead_id, key) VALUES (:lead_id, :key) ON CONFLICT DO NOTHING"
    )
    for start in range(0, len(folded), _BATCH):
        bind.execute(insert, folded[start : start + _BATCH])


def downgrade() -> None:
    """Nothing to undo: a folded key more only makes a lead a candidate it now is."""

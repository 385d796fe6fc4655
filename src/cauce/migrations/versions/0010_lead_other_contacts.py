"""Leads: the other emails and phones of a lead are match keys.

A merge keeps the stored lead's email and phone, and since 0008 each arrival keeps its
own. But a later arrival with one of those other addresses was matched by name only, as
if the address were new. `leads.other_emails` and `leads.other_phones` now list them
(`matching.plan.other_contacts`), filed under `e:` and `p:` keys like the lead's own;
this fills both for the leads already stored, in chunks, from their arrivals.

The keys are made with today's `email_key` and `other_contacts`, not a frozen copy: the
stored keys of every lead's own email come from that function too, and must agree.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 2000
_KEY_LENGTH = 200


def upgrade() -> None:
    """Add the two columns and fill them, with their match keys."""
    from cauce.leads.matching.plan import other_contacts
    from cauce.leads.matching.record import email_key

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("other_emails", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("other_phones", sa.Text(), nullable=True))
    bind = op.get_bind()
    # Leads with an arrival whose email or phone is not the lead's own, arrivals in order.
    read = sa.text(
        "SELECT l.id, l.email, l.phone, s.email, s.phone FROM leads AS l"
        " JOIN lead_sources AS s ON s.lead_id = l.id"
        " WHERE l.id > :after AND l.id <= :upto AND l.erased_at IS NULL"
        " AND ((s.email IS NOT NULL AND s.email <> COALESCE(l.email, ''))"
        " OR (s.phone IS NOT NULL AND s.phone <> COALESCE(l.phone, '')))"
        " ORDER BY l.id, s.id"
    )
    bounds = sa.text("SELECT id FROM leads WHERE id > :after ORDER BY id LIMIT :n")
    write = sa.text(
        "UPDATE leads SET other_emails = :emails, other_phones = :phones WHERE id = :id"
    )
    add_key = sa.text(
        "INSERT INTO lead_match_keys (lead_id, key) VALUES (:id, :key) ON CONFLICT DO NOTHING"
    )
    after = 0
    while ids := bind.execute(bounds, {"after": after, "n": _CHUNK}).scalars().all():
        lists: dict[int, dict[str, object]] = {}
        for lead_id, email, phone, sent_email, sent_phone in bind.execute(
            read, {"after": after, "upto": ids[-1]}
        ):
            lead = lists.setdefault(lead_id, {"email": email, "phone": phone})
            lead.update(other_contacts(lead, lead, {"email": sent_email, "phone": sent_phone}))
        after = ids[-1]
        if not lists:
            continue
        rows = [
            {"id": i, "emails": v.get("other_emails"), "phones": v.get("other_phones")}
            for i, v in lists.items()
        ]
        bind.execute(write, rows)
        keys = [
            {"id": i, "key": key[:_KEY_LENGTH]}
            for i, values in lists.items()
            for key in _keys(values, email_key)
        ]
        if keys:
            bind.execute(add_key, keys)


def _keys(values: dict[str, object], email_key: Callable[[str], str | None]) -> list[str]:
    emails = [email_key(e) for e in str(values.get("other_emails") or "").split()]
    phones = str(values.get("other_phones") or "").split()
    return [f"e:{key}" for key in emails if key] + [f"p:{phone}" for phone in phones]


def downgrade() -> None:
    """Take the other contacts' keys away, then drop the columns.

    Left behind, the keys would make PATCH refuse an address as another lead's (409)
    where nothing shows why. On SQLite the columns go with `ALTER TABLE ... DROP
    COLUMN`: a batch operation would copy the table and drop the old one, and with
    foreign keys on, that drop deletes every arrival, key and history line with it.
    """
    from cauce.leads.matching.record import email_key

    bind = op.get_bind()
    read = sa.text(
        "SELECT id, email, phone, other_emails, other_phones FROM leads"
        " WHERE other_emails IS NOT NULL OR other_phones IS NOT NULL"
    )
    remove = sa.text("DELETE FROM lead_match_keys WHERE lead_id = :id AND key = :key")
    gone: list[dict[str, object]] = []
    for lead_id, email, phone, emails, phones in bind.execute(read):
        own = {f"e:{email_key(email)}" if email else "", f"p:{phone}" if phone else ""}
        values = {"other_emails": emails, "other_phones": phones}
        gone.extend(
            {"id": lead_id, "key": key[:_KEY_LENGTH]}
            for key in _keys(values, email_key)
            if key not in own
        )
    if gone:
        bind.execute(remove, gone)
    for column in ("other_phones", "other_emails"):
        if bind.dialect.name == "sqlite":
            op.execute(f"ALTER TABLE leads DROP COLUMN {column}")
        else:
            op.drop_column("leads", column)

"""A lead's other contacts taken away by a PATCH: `other_emails` and `other_phones`.

A lead shows, beside its own email and phone, those its arrivals brought that a merge did
not make its own (`views.detail_view`), and matching keeps them as keys (`other_emails`,
`other_phones` columns). One of them may be someone else's (a review merged two people),
or the person asks for an old address to be forgotten (GDPR): a PATCH then lists what the
lead keeps, and what it leaves out is forgotten from the columns and from every arrival
that sent it. Nothing can be added this way: an entry the lead does not show is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.leads import repository_lead as repo_lead
from cauce.leads.errors import FieldError, LeadInvalid
from cauce.leads.matching.plan import OTHER_CONTACTS, contact_key, phone_contact
from cauce.leads.models import Lead, LeadSource

FIELDS = tuple(column for _, column in OTHER_CONTACTS)


async def keep_only(
    session: AsyncSession, lead: Lead, wanted: Mapping[str, list[str] | None]
) -> list[str]:
    """Leave `lead` only the other contacts `wanted` lists (by column: `other_emails`,
    `other_phones`; None keeps none); the columns that changed. An entry the lead does
    not show is a 422 naming it."""
    sources = await repo_lead.sources_of(session, lead.id)
    changed: list[str] = []
    problems: list[FieldError] = []
    forget: dict[str, set[str]] = {}
    for field, column in OTHER_CONTACTS:
        if column not in wanted:
            continue
        key = contact_key(field)
        own = key(getattr(lead, field))
        if field == "phone":  # its number with its extension is its own too
            shown_own = key(phone_contact(lead.phone, lead.phone_extension))
        listed = (getattr(lead, column) or "").split()
        sent = [
            s.email if field == "email" else phone_contact(s.phone, s.phone_extension)
            for s in sources
        ]
        shown = {k for v in (*listed, *sent) if (k := key(v))}
        if own is not None:
            shown.discard(own)
            if field == "phone":
                shown.discard(shown_own)
        keep: set[str] = set()
        for index, value in enumerate(wanted[column] or ()):
            k = key(value)
            if k is None or k not in shown:
                problems.append(
                    {
                        "pointer": f"/{column}/{index}",
                        "detail": f"not one of the lead's other {field}s: a change can only "
                        "take them away",
                        "type": "not_an_other_contact",
                    }
                )
            else:
                keep.add(k)
        if shown - keep:
            forget[column] = shown - keep
    if problems:  # refused before anything changes
        raise LeadInvalid(problems)
    for field, column in OTHER_CONTACTS:
        if column not in forget:
            continue
        gone = forget[column]
        key = contact_key(field)
        listed = (getattr(lead, column) or "").split()
        setattr(lead, column, " ".join(v for v in listed if key(v) not in gone) or None)
        changed.append(column)
        ids = [
            s.id
            for s in sources
            if key(s.email if field == "email" else phone_contact(s.phone, s.phone_extension))
            in gone
        ]
        if ids:
            cleared = ("email",) if field == "email" else ("phone", "phone_extension")
            await session.execute(
                update(LeadSource).where(LeadSource.id.in_(ids)).values(dict.fromkeys(cleared))
            )
    return changed

"""People erased (GDPR) whom an imported file must not bring back.

An erasure removes the person's data; the next import of an old list holding their
email used to create them again, marketing consent and all. So an erasure keeps, for
the lead, keyed hashes of its email (as matching keys it: `email_key`) and its other
emails, a team's mailbox aside (`ventas@`: colleagues share it), and of its phone if a
mobile (a landline may be a switchboard), with the time (`ErasedContact`): HMAC-SHA256
under the installation's `secret_key`, so a changed key forgets them all. The hashes are
pseudonymous, not anonymous (whoever holds the key can test a given address against
them): personal data kept for one purpose, honouring the erasure. An import's row whose
email is one of them (or, without an email, whose phone is) is refused, unless a live
lead holds that email or phone again.

Only imports are refused: a file is what the person once was in a list. A person who
comes back by themselves, through a form or the API, is a new lead (their own request is
the new basis), and from then on a file may update them. A merge or review is no erasure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime

import phonenumbers
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.config import Settings
from cauce.leads.matching import email_key
from cauce.leads.matching.record import role_mailbox
from cauce.leads.models import ErasedContact, Lead, LeadMatchKey
from cauce.leads.schemas import LeadIn


def secret_of(settings: Settings) -> bytes:
    """The key of the hashes: the installation's `secret_key` (as API keys' hashes)."""
    return settings.secret_key.get_secret_value().encode()


def digest(secret: bytes, kind: str, value: str) -> str:
    """The keyed hash of an email's key (`kind` "e") or an E.164 phone ("p")."""
    return hmac.new(secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def _email_digest(secret: bytes, email: str | None) -> str | None:
    key = email_key(email)
    return digest(secret, "e", key) if key else None


# A phone is one person's only if it is a mobile: a landline may be a switchboard every
# colleague shares, and refusing them all for one erasure is wrong.
_PERSONAL_PHONES = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    }
)


def _personal_phone(phone: str) -> bool:
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) in _PERSONAL_PHONES


def lead_digests(secret: bytes, lead: Lead) -> set[str]:
    """The hashes an erasure of `lead` keeps: its email and its other emails (a team's
    mailbox, `ventas@`, left out: colleagues share it), and its phone if a mobile."""
    emails = [lead.email, *(lead.other_emails or "").split()]
    found = {
        d
        for email in emails
        if email and not role_mailbox(email) and (d := _email_digest(secret, email))
    }
    if lead.phone and _personal_phone(lead.phone):
        found.add(digest(secret, "p", lead.phone))
    return found


async def remember(session: AsyncSession, secret: bytes, lead: Lead, at: datetime) -> None:
    """Keep the hashes of `lead`'s contacts, erased at `at` (call it before the data goes)."""
    rows = [{"digest": d, "erased_at": at} for d in sorted(lead_digests(secret, lead))]
    if rows:
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(insert(ErasedContact).values(rows).on_conflict_do_nothing())


def _row_key(lead: LeadIn) -> tuple[str, str, str] | None:
    # By the email when the row has one (a phone beside another email may be a shared
    # line); by the phone otherwise: the field, the hashed kind and the value.
    if lead.email:
        key = email_key(lead.email)
        return ("email", "e", key) if key else None
    return ("phone", "p", lead.phone) if lead.phone else None


async def erased_rows(
    session: AsyncSession, secret: bytes, leads: Sequence[LeadIn]
) -> dict[int, tuple[str, datetime]]:
    """Of `leads` (an import's rows), those whose person was erased and has not come back
    since (no live lead has the email or phone: match keys `e:`, `p:`): index -> the
    field it was found by and when the person was erased."""
    wanted = {i: key for i, lead in enumerate(leads) if (key := _row_key(lead))}
    if not wanted:
        return {}
    hashed = {i: digest(secret, kind, value) for i, (_, kind, value) in wanted.items()}
    query = select(ErasedContact.digest, ErasedContact.erased_at).where(
        ErasedContact.digest.in_(set(hashed.values()))
    )
    stored: dict[str, datetime] = {d: at for d, at in (await session.execute(query)).all()}
    found = {i for i, d in hashed.items() if d in stored}
    if not found:
        return {}
    # Come back by themselves (a form, the API): a live lead holds the contact again.
    keys = {f"{wanted[i][1]}:{wanted[i][2]}" for i in found}
    live = set(
        (await session.scalars(select(LeadMatchKey.key).where(LeadMatchKey.key.in_(keys)))).all()
    )
    return {
        i: (wanted[i][0], stored[hashed[i]])
        for i in sorted(found)
        if f"{wanted[i][1]}:{wanted[i][2]}" not in live
    }

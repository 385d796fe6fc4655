"""People erased (GDPR) whom an imported file must not bring back.

An erasure removes the person's data; the next import of an old list holding their
email used to create them again, marketing consent and all. So an erasure keeps, for
the lead, keyed hashes of its email (as matching keys it: `email_key`), its other emails
and its phone, with the time (`ErasedContact`): HMAC-SHA256 under the installation's
`secret_key`, so the table names no one and a changed key forgets them all. An import's
row whose email is one of them (or, without an email, whose phone is) is refused.

Only imports are refused: a file is what the person once was in a list. A person who
comes back by themselves, through a form or the API, is a new lead (their own request is
the new basis), and a merge or review is no erasure. The lead's other phones are left
out: a switchboard a colleague shares is no one person's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.config import Settings
from cauce.leads.matching import email_key
from cauce.leads.models import ErasedContact, Lead
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


def lead_digests(secret: bytes, lead: Lead) -> set[str]:
    """The hashes an erasure of `lead` keeps: its email, its other emails, its phone."""
    emails: Iterable[str | None] = [lead.email, *(lead.other_emails or "").split()]
    found = {d for email in emails if (d := _email_digest(secret, email))}
    if lead.phone:
        found.add(digest(secret, "p", lead.phone))
    return found


async def remember(session: AsyncSession, secret: bytes, lead: Lead, at: datetime) -> None:
    """Keep the hashes of `lead`'s contacts, erased at `at` (call it before the data goes)."""
    rows = [{"digest": d, "erased_at": at} for d in sorted(lead_digests(secret, lead))]
    if rows:
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(insert(ErasedContact).values(rows).on_conflict_do_nothing())


def _row_digest(secret: bytes, lead: LeadIn) -> tuple[str, str] | None:
    # By the email when the row has one (a phone beside another email may be a shared
    # line); by the phone otherwise.
    if lead.email:
        found = _email_digest(secret, lead.email)
        return ("email", found) if found else None
    return ("phone", digest(secret, "p", lead.phone)) if lead.phone else None


async def erased_rows(
    session: AsyncSession, secret: bytes, leads: Sequence[LeadIn]
) -> dict[int, tuple[str, datetime]]:
    """Of `leads` (an import's rows), those whose person was erased: index -> the field
    it was found by and when the person was erased."""
    wanted = {i: found for i, lead in enumerate(leads) if (found := _row_digest(secret, lead))}
    if not wanted:
        return {}
    digests = {d for _, d in wanted.values()}
    query = select(ErasedContact.digest, ErasedContact.erased_at).where(
        ErasedContact.digest.in_(digests)
    )
    stored: dict[str, datetime] = {d: at for d, at in (await session.execute(query)).all()}
    return {i: (field, stored[d]) for i, (field, d) in wanted.items() if d in stored}

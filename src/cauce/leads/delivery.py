"""CRM delivery: move pending leads to the CRM in batches, exactly once in effect.

One delivery job per CRM account runs at a time (a job lock) and at most one waits (a
dedupe key), whatever the number of leads accepted: every accepted or edited lead is
marked `pending` and asks for a delivery, and the job that runs takes the pending leads
in batches of the vendor's maximum size. A rate limit of N requests therefore carries up
to N x batch records (see docs/adr/0006-job-engines.md).

Exactly once in effect: every write is an upsert on a stable key (the email, or Cauce's
own id property), so a batch re-sent after a crash updates the contacts it created.
Versions: a lead's `version` grows on every change; after an upsert the lead is marked
`synced` only if its version is still the one sent (compare-and-set), otherwise it stays
`pending` and the newer state goes in a later batch, so an older state never wins.

Cleared fields: a contact carries the lead's fields with a value, and, as None (a clear,
which each adapter words its vendor's way), the properties an earlier request gave, or
tried to give, a value whose field is empty now (`Lead.crm_sent_properties`: grown before
each request leaves, `_RECORD_ATTEMPT`, since the CRM may apply one whose answer is lost;
set to what a success carried by the compare-and-set that marks the lead synced). A
property Cauce never gave a value is left out: what people typed in the CRM for a field
Cauce does not have stays.

Values go in each CRM's form (`wire_value`: HubSpot's booleans as "true"/"false", its
dates as epoch milliseconds). A marketing consent withdrawn is a value, false, and is
sent; a consent absent is unknown, never false: nothing is sent, or a clear as above.
The keys a mapping may name are the settings' (`CRM_MAPPING_KEYS`, `custom.<key>`): a
whole object (`consent`) is refused at start-up, never sent as its Python text.

No transaction is held across a CRM call: each batch is read in one short transaction
and its outcome written in another, so a crash loses at most the bookkeeping of one
batch, which the next run redoes (upserts are idempotent).

A CRM without an upsert (`CrmClient.no_upsert`: Pipedrive) creates with a plain POST,
which a lost answer leaves in doubt and the CRM's lagging search cannot settle at once.
For it, right before the CRM sends a create (`CrmWithoutUpsert.before_create`), the lead
is marked "create in flight" in a transaction of its own, committed before the request
leaves; the answer's write-back turns that into nothing, or into "in doubt since T" when
the outcome says the create may have been applied (`UpsertOutcome.in_doubt_at`). A run
that finds a mark in flight (its worker died, or its call was cut, before the answer was
written) takes it as in doubt from that moment: the job's own retry cannot be counted on
to come late enough (a restarted embedded worker releases its jobs at once). The doubt
goes with the lead's next contact (`CrmContact.create_in_doubt_at`), the CRM asks to wait
until its allowance has passed (`UpsertOutcome.retry_at`): the run leaves such leads
pending and reports them (`DeliveryReport.waiting`), and the job asks for a delivery of
just those leads then (`tasks`), so that leads accepted meanwhile are not kept waiting.
The marks live in their own columns (`Lead.crm_create_sent_at`, `crm_create_doubt_at`:
`create_doubt`) and go with the success that records the contact id.

Cancelling a lane cuts its CRM call, never its database work: the read of a batch and
the write-back of an answer run to their end (`_to_the_end`). A database call cut
half-way goes on in aiosqlite's thread while SQLAlchemy throws the connection away
mid-transaction; SQLite's write lock could then stay held until the garbage collector
freed the connection, past every other writer's busy timeout ("database is locked"),
and an answer the CRM gave was lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar, cast

import structlog
from opentelemetry.trace import Tracer
from sqlalchemy import JSON, Table, bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import (
    CRM_CONSENT_FIELDS,
    CRM_CUSTOM_PREFIXES,
    CRM_LEAD_FIELDS,
    CrmSettings,
)
from cauce.core.db import unit_of_work
from cauce.core.db.base import UtcDateTime, utcnow
from cauce.core.observability.trace_parent import current_traceparent, links_to
from cauce.leads.models import Lead
from cauce.leads.ports import (
    CrmClient,
    CrmContact,
    CrmKey,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    CrmWithoutUpsert,
    UpsertOutcome,
    utc_instant,
)

log = structlog.get_logger("cauce.leads.delivery")

DELIVER_TASK = "crm.deliver"
REDELIVER_TASK = "crm.redeliver"
ERASE_TASK = "crm.erase"
CRM_QUEUE = "crm"
MAX_ERROR_CHARS = 1000

_T = TypeVar("_T")


def delivery_lock(account: str) -> str:
    """The job lock that keeps one delivery per CRM account at a time."""
    return f"crm:{account}"


def delivery_dedupe_key(account: str) -> str:
    """At most one delivery job waits per CRM account."""
    return f"crm-deliver:{account}"


def contact_key(lead: Lead, settings: CrmSettings, *, email_held: bool = False) -> CrmKey:
    """The unique property the CRM finds this lead by: its email, unless it has none or
    another lead holds it there (`email_held`), then its Cauce id."""
    if lead.email and not email_held:
        return CrmKey("email", lead.email)
    return CrmKey(settings.cauce_id_property, lead.uid)


def contact_properties(lead: Lead, mapping: Mapping[str, str], provider: str) -> dict[str, Any]:
    """The lead's fields renamed to the CRM's properties, each in `provider`'s form
    (`wire_value`); fields without a value are left out.

    A marketing consent withdrawn is false, a value (sent as the CRM's false); a lead
    without a consent has none (unknown, not a no), so nothing is sent, or a clear where
    an earlier sync gave one (`to_contact`)."""
    properties: dict[str, Any] = {}
    for cauce_field, crm_property in mapping.items():
        value = wire_value(field_value(lead, cauce_field), provider)
        if value is None or value == "":
            continue
        properties[crm_property] = value
    return properties


def field_value(lead: Lead, key: str) -> Any:
    """What the mapping key `key` reads of `lead` (`CAUCE_CRM__FIELD_MAPPING`'s keys, which
    the settings check: `CRM_MAPPING_KEYS`, `custom.<key>`); None if it has nothing."""
    if key.startswith("consent."):
        key = "consent_" + key.removeprefix("consent.")
    if key in CRM_CONSENT_FIELDS:
        consent = lead.consent
        value = consent.get(CRM_CONSENT_FIELDS[key]) if isinstance(consent, dict) else None
        if key == "consent_marketing":
            return value if isinstance(value, bool) else None
        if key in ("consent_given_at", "consent_given_on"):
            at = utc_instant(value)
            return at.date() if at is not None and key == "consent_given_on" else at
        return value
    if key.startswith("utm."):
        return (lead.utm or {}).get(key.removeprefix("utm."))
    for prefix in CRM_CUSTOM_PREFIXES:
        if key.startswith(prefix):
            return (lead.custom_fields or {}).get(key.removeprefix(prefix))
    return getattr(lead, key, None) if key in CRM_LEAD_FIELDS else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def wire_value(value: Any, provider: str) -> str | int | float | bool | None:
    """`value` in the form `provider`'s properties take.

    * A boolean: HubSpot's `bool` property (a booleancheckbox) takes the text `"true"` or
      `"false"`, as every HubSpot property value is text; Pipedrive has no boolean field
      (a text field takes `"true"`/`"false"`); the webhook's JSON has `true`/`false`.
    * An instant (`consent_given_at`, `created_at`): HubSpot's `datetime` property takes
      epoch milliseconds (as text); the others ISO 8601 in UTC, to the millisecond
      (`2025-03-10T09:30:15.123Z`).
    * A day (`consent_given_on`): HubSpot's `date` property takes the epoch milliseconds
      of its midnight UTC (any other time is refused); the others `YYYY-MM-DD`.
    * An object or a list: None, never its Python text (the settings refuse such a key).
    """
    if isinstance(value, bool):
        return value if provider == "webhook" else ("true" if value else "false")
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if provider == "hubspot":
            return str((utc - _EPOCH) // _MILLISECOND)
        return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        if provider == "hubspot":
            midnight = datetime(value.year, value.month, value.day, tzinfo=UTC)
            return str((midnight - _EPOCH) // _MILLISECOND)
        return value.isoformat()
    if isinstance(value, str | int | float):
        return value
    return None


def to_contact(lead: Lead, settings: CrmSettings, *, email_held: bool = False) -> CrmContact:
    """The CRM contact a lead row becomes. With `email_held` (another lead's contact has
    its email, which a CRM keeps unique) it is keyed by its Cauce id and sent without it.

    A mapped property an earlier sync gave a value (`crm_sent_properties`) whose field is
    empty now is in it as None: cleared. The email held elsewhere is not empty, only
    withheld: it is no clear. The contact carries the lead's consent as stored, mapped
    or not (a CRM may set a subscription status from it)."""
    properties = contact_properties(lead, settings.field_mapping, settings.provider)
    withheld = _withheld(settings, email_held)
    for name in withheld:
        properties.pop(name, None)
    properties.setdefault(settings.cauce_id_property, lead.uid)
    mapped = set(settings.field_mapping.values())
    for name in lead.crm_sent_properties or ():
        if name in mapped and name not in properties and name not in withheld:
            properties[name] = None
    key = contact_key(lead, settings, email_held=email_held)
    consent = dict(lead.consent) if isinstance(lead.consent, dict) else None
    return CrmContact(lead.id, lead.version, key, properties, lead.crm_id, consent)


def email_property(settings: CrmSettings) -> str:
    """The CRM property a lead's email is in: the mapping's, else `email` (the key)."""
    return settings.field_mapping.get("email", "email")


def _withheld(settings: CrmSettings, email_held: bool) -> frozenset[str]:
    return frozenset({email_property(settings)} if email_held else ())


def sent_properties(
    lead: Lead, contact: CrmContact, settings: CrmSettings, *, email_held: bool = False
) -> list[str]:
    """What `crm_sent_properties` becomes once `contact` (made of `lead`) is in the CRM:
    the properties it gives a value, and a withheld email the CRM may still hold from an
    earlier sync (it is cleared there if the lead's email is emptied later).

    A contact keyed by the email carries it, mapped or not: the record names it then
    (`email_property`), which tells that this lead's contact has the address
    (`email_holders`). Unmapped, it is never sent as a clear (`to_contact`)."""
    given = {name for name, value in contact.properties.items() if value is not None}
    if contact.key.property == "email":
        given.add(email_property(settings))
    kept = _withheld(settings, email_held) & set(lead.crm_sent_properties or ())
    return sorted(given | kept)


async def resend_contact_of(session: AsyncSession, *crm_ids: str) -> int:
    """The live leads synced to the CRM contact `crm_ids` name, which was deleted there
    (several ids: a record and the contacts merged into it), made to be sent again (as a
    new contact: nothing of the old one is cleared); how many. Their version grows: a
    delivery that sent one of them to the deleted contact before this, and records its
    answer after, leaves it pending, not synced to a contact that is gone."""
    if not crm_ids:
        return 0
    result = await session.execute(
        update(Lead)
        .where(
            Lead.crm_id.in_(sorted(set(crm_ids))),
            Lead.erased_at.is_(None),
            Lead.sync_status != "held",
        )
        .values(
            version=Lead.version + 1,
            crm_id=None,
            synced_version=0,
            crm_sent_properties=None,
            crm_create_sent_at=None,
            crm_create_doubt_at=None,
            sync_status="pending",
            trace_parent=current_traceparent(),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# A lead held for review was never delivered and waits for a person: it holds no email.
_HELD = "held"


def _holding_rank(
    lead_id: int, sync_status: str, sent: Sequence[str] | None, email_name: str
) -> tuple[bool, bool, int]:
    """Where a live lead not held for review stands to hold its email (lowest first): a
    lead whose contact has the address (its record names the email: a request carrying
    it has left), then one about to be sent (pending), then the earliest."""
    return (email_name not in (sent or ()), sync_status != "pending", lead_id)


async def email_holders(
    session: AsyncSession, leads: Sequence[Lead], *, email_name: str = "email"
) -> dict[str, int]:
    """For `leads`' emails (by `email_key`: the address lower-cased, as a CRM keys a
    contact), the lead whose CRM contact holds each.

    Two leads share an email only where matching kept them apart under it: a team's
    mailbox (`info@`, under the names of two people), or one a person reviewed as two
    people's (a family's). A CRM keeps an email on one contact: keyed by it, their
    updates went to one contact, and erasing one lead deleted the other's.

    The holder, among the live leads with the email that are not held for review (a held
    lead was never delivered: holding the address, no contact would have it):

    1. the lead whose contact has the address: its `crm_sent_properties` names the email
       property (`email_name`), which a request keyed by or carrying the email adds
       before it leaves (`_record_attempt`), and which a withheld lead's never gains.
       So the holder stays the holder when another lead gets the address later (a lower
       id given it by a merge, one released from its hold): taking it from that contact
       is what HubSpot refuses (CONFLICT). Between two such leads (synced before this
       rule), the earliest;
    2. else the earliest pending lead (the next one sent), else the earliest.

    When the holder stops holding (erased, its email changed or cleared), the others are
    made pending (`hand_over_email`): the next delivery sends the address with one of them.
    One indexed look-up a delivery batch (`ix_leads_email_key`)."""
    keys = {lead.email_key for lead in leads if lead.email_key}
    if not keys:
        return {}
    rows = await session.execute(
        select(Lead.email_key, Lead.id, Lead.sync_status, Lead.crm_sent_properties).where(
            Lead.email_key.in_(sorted(keys)),
            Lead.erased_at.is_(None),
            Lead.sync_status != _HELD,
        )
    )
    best: dict[str, tuple[bool, bool, int]] = {}
    for key, lead_id, status, sent in rows.all():
        rank = _holding_rank(lead_id, status, sent, email_name)
        if key is not None and (key not in best or rank < best[key]):
            best[key] = rank
    return {key: rank[-1] for key, rank in best.items()}


@dataclass(frozen=True, slots=True)
class EmailHold:
    """What decides whether a lead holds its email at the CRM (`email_holders`), taken
    before a change that may take the email off it (`hand_over_email`)."""

    lead_id: int
    key: str | None
    sync_status: str
    sent: tuple[str, ...]

    @classmethod
    def of(cls, lead: Lead) -> EmailHold:
        return cls(lead.id, lead.email_key, lead.sync_status, tuple(lead.crm_sent_properties or ()))


async def hand_over_email(
    session: AsyncSession,
    settings: CrmSettings,
    before: EmailHold,
    key_now: str | None,
    among: Collection[int] | None = None,
) -> bool:
    """A lead's email goes from `before.key` to `key_now` (None: erased, merged away or
    cleared): if it held the address (`email_holders`), the other live leads with it
    that are not held for review are made pending, their version grown (a batch out
    with one of them, sent without the address, is superseded, not marked synced), so
    the next delivery sends the address with the new holder. Whether anything was: the
    caller then asks for a delivery, in its transaction. A held lead holds nothing.

    Nothing is handed over when another lead's contact has the address and holds it
    before this one; when none has it (no lead sent yet, or one left without it by the
    rule before this one), the others are sent again all the same: harmless, and the
    address reaches one of them.

    `among`: only those leads (the caller holds their locks: an intake locks every lead
    it changes in one order, `service._sharing_addresses`).

    Two indexed statements (`ix_leads_email_key`); `before`'s lead is left as its caller
    writes it, unflushed."""
    if before.key is None or before.key == key_now or before.sync_status == _HELD:
        return False
    if among is not None and not among:
        return False
    sharing = (
        Lead.email_key == before.key,
        Lead.erased_at.is_(None),
        Lead.sync_status != _HELD,
        Lead.id != before.lead_id,
        *(() if among is None else (Lead.id.in_(sorted(among)),)),
    )
    name = email_property(settings)
    mine = _holding_rank(before.lead_id, before.sync_status, before.sent, name)
    with session.no_autoflush:
        rows = await session.execute(
            select(Lead.id, Lead.sync_status, Lead.crm_sent_properties).where(*sharing)
        )
        ranks = [_holding_rank(*row, name) for row in rows.all()]
        # rank[0] False: that lead's contact has the address.
        if not ranks or any(rank < mine and not rank[0] for rank in ranks):
            return False
        await session.execute(
            update(Lead)
            .where(*sharing)
            .values(
                version=Lead.version + 1,
                sync_status="pending",
                trace_parent=current_traceparent(),
            )
            .execution_options(synchronize_session="fetch")
        )
    return True


@dataclass
class DeliveryReport:
    """What one delivery run did."""

    batches: int = 0
    synced: int = 0
    failed_for_good: list[int] = field(default_factory=list)
    retry_later: list[int] = field(default_factory=list)
    superseded: int = 0  # changed while in flight: stays pending for the next batch
    out_of_time: bool = False
    # Leads (ids) erased while their batch was out, which the CRM took (`on_erased` was
    # told, in the transaction that found them).
    erased_again: list[int] = field(default_factory=list)
    # Leads (ids) not to be sent before a time (a create in doubt: `UpsertOutcome.retry_at`).
    waiting: dict[int, datetime] = field(default_factory=dict)


def _unique_keys(contacts: Sequence[CrmContact]) -> list[CrmContact]:
    """One contact per key in a batch (the CRM refuses duplicates); the rest wait."""
    seen: set[CrmKey] = set()
    unique = []
    for contact in contacts:
        if contact.key not in seen:
            seen.add(contact.key)
            unique.append(contact)
    return unique


_LEADS = cast(Table, Lead.__table__)

# Before a batch leaves, each lead's record of what Cauce gave a value in the CRM
# (`crm_sent_properties`) takes in what this request gives one: the CRM may apply a
# request whose answer never reaches Cauce (a timeout, a 5xx after the write, a call cut
# by a cancellation or a partial failure), and a value it took that way must be cleared
# when the field is emptied here. A property the request never reached the CRM with is
# then cleared once later, on a field Cauce was writing anyway. Compare-and-set on the
# version read: a lead changed meanwhile is superseded, and read again.
_RECORD_ATTEMPT = (
    update(_LEADS)
    .where(
        _LEADS.c.id == bindparam("lead_id"),
        _LEADS.c.version == bindparam("read_version"),
        _LEADS.c.erased_at.is_(None),
    )
    .values(crm_sent_properties=bindparam("sent_properties", type_=JSON()))
)


async def _record_attempt(
    session: AsyncSession,
    contacts: Sequence[CrmContact],
    leads: Mapping[int, Lead],
    sent: Mapping[int, Sequence[str]],
) -> None:
    """`_RECORD_ATTEMPT` for the leads whose record this batch grows."""
    grown = []
    for contact in contacts:
        lead = leads[contact.lead_id]
        recorded = lead.crm_sent_properties
        after = set(recorded or ()) | set(sent[contact.lead_id])
        if recorded is None or after != set(recorded):
            grown.append(
                {"lead_id": lead.id, "read_version": lead.version, "sent_properties": sorted(after)}
            )
    if grown:
        conn = await session.connection()
        await conn.execute(_RECORD_ATTEMPT, grown)


@dataclass(frozen=True, slots=True)
class CreateDoubt:
    """A lead's create marks (module docstring): since when a create of it may have been
    applied without Cauce knowing (`since`, `Lead.crm_create_doubt_at`), and since when
    one is (or was, if its worker died) in flight (`sent_at`, `Lead.crm_create_sent_at`)."""

    since: datetime | None = None
    sent_at: datetime | None = None

    @property
    def in_flight(self) -> bool:
        """Whether a create is marked in flight."""
        return self.sent_at is not None

    def recorded(self, lead_id: int) -> dict[str, Any]:
        """`_RECORD_DOUBT`'s parameters that say this of `lead_id`."""
        return {"lead_id": lead_id, "doubt_at": self.since, "sent_at": self.sent_at}


def create_doubt(lead: Lead) -> CreateDoubt:
    """A lead's create marks."""
    return CreateDoubt(lead.crm_create_doubt_at, lead.crm_create_sent_at)


def _latest(*instants: datetime | None) -> datetime | None:
    known = [at for at in instants if at is not None]
    return max(known) if known else None


# The marks of a create, written whatever the lead's version (only delivery, one run per
# CRM account, writes them; an edit changes none of it).
_RECORD_DOUBT = (
    update(_LEADS)
    .where(_LEADS.c.id == bindparam("lead_id"), _LEADS.c.erased_at.is_(None))
    .values(
        crm_create_doubt_at=bindparam("doubt_at", type_=UtcDateTime()),
        crm_create_sent_at=bindparam("sent_at", type_=UtcDateTime()),
    )
)
# The same, with the record of the properties given a value grown (`_RECORD_ATTEMPT`).
_RECORD_ATTEMPT_AND_DOUBT = _RECORD_DOUBT.values(
    crm_sent_properties=bindparam("sent_properties", type_=JSON())
)


async def _mark_creates(
    session: AsyncSession,
    contacts: Sequence[CrmContact],
    leads: Mapping[int, Lead],
    sent: Mapping[int, Sequence[str]],
    now: datetime,
) -> tuple[list[CrmContact], dict[int, CreateDoubt]]:
    """For a CRM without an upsert, in the transaction that reads a batch: each contact
    with its create in doubt (a mark left in flight is in doubt from `now`: the run that
    made it never wrote its answer back), and each lead's record grown as
    `_record_attempt` grows it. Returns the contacts to send and each lead's marks as
    written (what a create's flight, then the write-back, start from)."""
    sendable: list[CrmContact] = []
    doubts: dict[int, CreateDoubt] = {}
    marked = []
    for contact in contacts:
        lead = leads[contact.lead_id]
        was = create_doubt(lead)
        recorded = lead.crm_sent_properties
        names = sorted(set(recorded or ()) | set(sent[contact.lead_id]))
        since = _latest(was.since, now if was.in_flight else None)
        doubts[contact.lead_id] = doubt = CreateDoubt(since)
        if doubt != was or recorded is None or names != sorted(recorded):
            marked.append({**doubt.recorded(lead.id), "sent_properties": names})
        sendable.append(dataclasses.replace(contact, create_in_doubt_at=since))
    if marked:
        conn = await session.connection()
        await conn.execute(_RECORD_ATTEMPT_AND_DOUBT, marked)
    return sendable, doubts


async def _pending_batch(
    session: AsyncSession,
    limit: int,
    exclude: set[int],
    only: Sequence[int] | None,
    after: int = 0,
) -> list[Lead]:
    query = (
        select(Lead).where(Lead.erased_at.is_(None), Lead.id > after).order_by(Lead.id).limit(limit)
    )
    if only is not None:
        query = query.where(Lead.id.in_(list(only)))
    else:
        query = query.where(Lead.sync_status == "pending")
    if exclude:
        query = query.where(Lead.id.not_in(exclude))
    return list((await session.scalars(query)).all())


# A successful upsert, compare-and-set on the version (see the module docstring): the lead
# is `synced` only if nothing changed since the batch was read. Prebuilt Core, run once
# per batch with every success's parameters (executemany).
_MARK_SENT = (
    update(_LEADS)
    .where(
        _LEADS.c.id == bindparam("lead_id"),
        _LEADS.c.synced_version < bindparam("sent_version"),
        # A lead erased while its batch was out stays a tombstone (`erased_again`).
        _LEADS.c.erased_at.is_(None),
    )
    .values(
        synced_version=bindparam("sent_version"),
        crm_id=bindparam("sent_crm_id"),
        synced_at=bindparam("sent_at", type_=UtcDateTime()),
        crm_sent_properties=bindparam("sent_properties", type_=JSON()),
        # The contact id recorded: no create of it is in flight or in doubt.
        crm_create_sent_at=None,
        crm_create_doubt_at=None,
        sync_attempts=_LEADS.c.sync_attempts + 1,
        last_sync_error=None,
        sync_status=case(
            (_LEADS.c.version == bindparam("sent_version"), "synced"), else_="pending"
        ),
    )
)


async def _record_batch(
    session: AsyncSession,
    contacts: Sequence[CrmContact],
    outcomes: Sequence[UpsertOutcome],
    sent: Mapping[int, Sequence[str]] | None = None,
    doubts: Mapping[int, CreateDoubt] | None = None,
) -> list[tuple[CrmContact, str]]:
    """Write a batch's outcomes; each contact's verdict: 'synced', 'superseded', 'failed',
    'retry' or 'wait' (not to be sent before its `retry_at`).

    `sent` is each lead's `crm_sent_properties` after its success (`sent_properties`;
    default: the properties its contact gives a value). It is written by the version's
    compare-and-set, with `synced_version`: an older state's never overwrites a newer's.
    `doubts`: the marks of a CRM without an upsert's leads (`_mark_creates`): a failure's
    write takes a create's flight off, keeping a doubt (the outcome's or the lead's).
    """
    now = utcnow()
    conn = await session.connection()
    done = [(c, o) for c, o in zip(contacts, outcomes, strict=True) if o.ok]
    verdicts: dict[int, str] = {}
    if done:
        await conn.execute(
            _MARK_SENT,
            [
                {
                    "lead_id": c.lead_id,
                    "sent_version": c.version,
                    "sent_crm_id": o.crm_id,
                    "sent_at": now,
                    "sent_properties": list(sent[c.lead_id])
                    if sent is not None and c.lead_id in sent
                    else sorted(k for k, v in c.properties.items() if v is not None),
                }
                for c, o in done
            ],
        )
        rows = await conn.execute(
            select(
                _LEADS.c.id, _LEADS.c.sync_status, _LEADS.c.synced_version, _LEADS.c.erased_at
            ).where(_LEADS.c.id.in_([c.lead_id for c, _ in done]))
        )
        versions = {c.lead_id: c.version for c, _ in done}
        for lead_id, status, synced_version, erased_at in rows:
            same = status == "synced" and synced_version == versions[lead_id]
            if erased_at is not None:
                # Sent by a batch read before the erasure, and now in the CRM again (a
                # worker paused past its job's recovery, say): to be erased there again.
                verdicts[lead_id] = "erased"
            else:
                verdicts[lead_id] = "synced" if same else "superseded"
    for contact, outcome in zip(contacts, outcomes, strict=True):
        if outcome.ok:
            continue
        error = (outcome.error or "rejected by the CRM")[:MAX_ERROR_CHARS]
        values: dict[str, Any] = {
            "sync_attempts": Lead.sync_attempts + 1,
            "last_sync_error": error,
        }
        doubt = doubts.get(contact.lead_id) if doubts is not None else None
        if doubt is not None:
            values["crm_create_doubt_at"] = _latest(doubt.since, outcome.in_doubt_at)
            values["crm_create_sent_at"] = None
        if not outcome.retryable:
            values["sync_status"] = case(
                (Lead.version == contact.version, "failed"), else_="pending"
            )
        # Not on a lead erased while its batch was out: a CRM's error may quote the
        # contact (HubSpot's CONFLICT names the email), and a tombstone keeps none of it.
        await session.execute(
            update(Lead)
            .where(Lead.id == contact.lead_id, Lead.erased_at.is_(None))
            .values(**values)
        )
        if not outcome.retryable:
            verdicts[contact.lead_id] = "failed"
        else:
            verdicts[contact.lead_id] = "retry" if outcome.retry_at is None else "wait"
    return [(c, verdicts.get(c.lead_id, "superseded")) for c in contacts]


# A request the CRM refused or could not take whole: each lead of its batch says so (the
# job decides when to send again). Compare-and-set on the version, as a success: a lead
# changed since its batch was read has nothing of this to say yet.
_MARK_TRIED = (
    update(_LEADS)
    .where(_LEADS.c.id == bindparam("lead_id"), _LEADS.c.version == bindparam("sent_version"))
    .values(
        sync_attempts=_LEADS.c.sync_attempts + 1,
        last_sync_error=bindparam("error"),
    )
)


def request_error(exc: CrmThrottled | CrmUnavailable | CrmRejected) -> str:
    """How a lead's `sync.last_error` words a whole request's failure."""
    if isinstance(exc, CrmThrottled):
        why = f"the CRM's rate limit{f' ({exc.policy})' if exc.policy else ''}"
        return f"{why}: sent again after {exc.until.isoformat()}"[:MAX_ERROR_CHARS]
    if isinstance(exc, CrmUnavailable):
        return f"the CRM did not take the request ({exc}); sent again later"[:MAX_ERROR_CHARS]
    return f"the CRM refused the request: {exc}"[:MAX_ERROR_CHARS]


async def _record_request_error(
    session: AsyncSession,
    contacts: Sequence[CrmContact],
    error: str,
    doubts: Mapping[int, CreateDoubt] | None = None,
) -> None:
    conn = await session.connection()
    await conn.execute(
        _MARK_TRIED,
        [{"lead_id": c.lead_id, "sent_version": c.version, "error": error} for c in contacts],
    )
    # Leads whose creates' flights are over (`_Delivery._record_failure`); doubts stay.
    landed = [
        doubts[c.lead_id].recorded(c.lead_id)
        for c in contacts
        if doubts is not None and c.lead_id in doubts
    ]
    if landed:
        await conn.execute(_RECORD_DOUBT, landed)


# Called in the transaction that finds leads erased while their batch was out (their
# ids): what carries their erasure to the CRM again commits with that finding.
OnErased = Callable[[AsyncSession, list[int]], Awaitable[None]]


async def deliver(
    sessionmaker: async_sessionmaker[AsyncSession],
    crm: CrmClient,
    settings: CrmSettings,
    *,
    only: Sequence[int] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    on_batch: Callable[[DeliveryReport], None] | None = None,
    on_erased: OnErased | None = None,
    tracer: Tracer | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> DeliveryReport:
    """Deliver pending leads (or exactly the leads `only` names) until none remain.

    `settings.delivery_lanes` batches are in flight at once (one per lane): a lane reads
    the next pending batch, leaving out the leads and keys other lanes are sending, so a
    lead is never in two requests at once and its versions reach the CRM in order.

    CrmThrottled / CrmUnavailable / CrmRejected propagate: the job decides when to run
    again. The other lanes are cancelled: no batch starts after the error, a CRM call in
    flight is cut (its batch stays pending and is re-sent later, harmlessly, as
    upserts), and a write-back in progress completes before the error is raised: an
    answer a lane has received is always recorded.

    With a `tracer`, each CRM request runs in a span (`crm.deliver.batch`) that links to
    the spans that made its leads pending (`Lead.trace_parent`: their requests' or
    jobs'), so each lead's trace goes on to the CRM call whichever trace the job is in.

    Leads that must wait (a create in doubt) are left pending, in `DeliveryReport.waiting`
    with the time each may go (the job asks for a delivery of just them then: `tasks`).
    `clock` tells the time marks are made at.
    """
    run = _Delivery(
        sessionmaker, crm, settings, only, monotonic, on_batch, on_erased, tracer, clock
    )
    lanes = [
        asyncio.create_task(run.lane(), name=f"crm-delivery-lane-{n}")
        for n in range(max(1, settings.delivery_lanes))
    ]
    try:
        done, pending = await asyncio.wait(lanes, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        raise
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)  # their database work ends
    for task in lanes:
        if task in done and not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
    return run.report


async def _to_the_end(work: Coroutine[Any, Any, _T]) -> _T:
    """Run `work` (database work) to its end even if the caller is cancelled meanwhile,
    however often; the cancellation is raised once the work has ended."""
    task = asyncio.create_task(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])  # a cancelled wait() leaves the task running
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise cancelled
    return task.result()


class _Delivery:
    """The state the lanes of one delivery run share."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        crm: CrmClient,
        settings: CrmSettings,
        only: Sequence[int] | None,
        monotonic: Callable[[], float],
        on_batch: Callable[[DeliveryReport], None] | None,
        on_erased: OnErased | None = None,
        tracer: Tracer | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.crm = crm
        self.settings = settings
        self.only = only
        self.monotonic = monotonic
        self.on_batch = on_batch
        self.on_erased = on_erased
        self.tracer = tracer
        self.clock = clock
        # A CRM without an upsert: its creates are marked in flight (`_mark_creates`).
        self.marks_creates = bool(getattr(crm, "no_upsert", False))
        # Each in-flight lead's create marks without the flight (`_mark_creates`), and
        # the leads whose create was marked in flight (`_create_leaves`).
        self.doubts: dict[int, CreateDoubt] = {}
        self.flying: set[int] = set()
        self.report = DeliveryReport()
        self.deadline = monotonic() + settings.delivery_budget_seconds
        self.batch_size = min(settings.batch_size, crm.max_batch)
        self.skip: set[int] = set()
        self.in_flight: set[int] = set()
        self.keys_in_flight: set[CrmKey] = set()
        # Each in-flight lead's `crm_sent_properties` once its contact is in the CRM.
        self.sent: dict[int, list[str]] = {}
        # Each in-flight lead's id and the span that made it pending (`Lead.trace_parent`).
        self.traced: dict[int, tuple[str, str | None]] = {}
        self.reading = asyncio.Lock()
        # Reads go forward from the last lead read (keyset), not from the first pending
        # one: on PostgreSQL the index entries of leads synced in this run stay behind
        # until vacuum, and every read would walk past all of them again.
        self.after = 0

    async def _next_batch(self) -> list[CrmContact]:
        async with self.reading:
            async with unit_of_work(self.sessionmaker) as session:
                exclude = self.skip | self.in_flight
                leads = await _pending_batch(
                    session, self.batch_size, exclude, self.only, self.after
                )
                if not leads and self.after:
                    # Once past the end, look again from the start for leads that
                    # became pending behind the cursor (edited, superseded).
                    self.after = 0
                    leads = await _pending_batch(session, self.batch_size, exclude, self.only)
                if leads:
                    self.after = leads[-1].id
                holders = await email_holders(
                    session, leads, email_name=email_property(self.settings)
                )
                built: list[CrmContact] = []
                sent: dict[int, list[str]] = {}
                by_id = {lead.id: lead for lead in leads}
                for lead in leads:
                    held = holders.get(lead.email_key or "", lead.id) != lead.id
                    contact = to_contact(lead, self.settings, email_held=held)
                    built.append(contact)
                    sent[lead.id] = sent_properties(lead, contact, self.settings, email_held=held)
                contacts = [c for c in _unique_keys(built) if c.key not in self.keys_in_flight]
                if self.marks_creates:
                    contacts, doubts = await _mark_creates(
                        session, contacts, by_id, sent, self.clock()
                    )
                    self.doubts.update(doubts)
                else:
                    await _record_attempt(session, contacts, by_id, sent)
            self.in_flight.update(c.lead_id for c in contacts)
            self.keys_in_flight.update(c.key for c in contacts)
            self.sent.update((c.lead_id, sent[c.lead_id]) for c in contacts)
            self.traced.update(
                (c.lead_id, (by_id[c.lead_id].uid, by_id[c.lead_id].trace_parent)) for c in contacts
            )
            return contacts

    async def _record(
        self, contacts: Sequence[CrmContact], outcomes: Sequence[UpsertOutcome]
    ) -> list[tuple[CrmContact, str]]:
        sent = {c.lead_id: self.sent[c.lead_id] for c in contacts if c.lead_id in self.sent}
        doubts = {c.lead_id: self.doubts[c.lead_id] for c in contacts if c.lead_id in self.doubts}
        async with unit_of_work(self.sessionmaker) as session:
            verdicts = await _record_batch(session, contacts, outcomes, sent, doubts)
            erased = [c.lead_id for c, verdict in verdicts if verdict == "erased"]
            if erased and self.on_erased is not None:
                await self.on_erased(session, erased)
            return verdicts

    async def _record_failure(
        self, contacts: Sequence[CrmContact], exc: CrmThrottled | CrmUnavailable | CrmRejected
    ) -> None:
        # Best effort: the CRM's error is what the job acts on, not a failure to note it.
        # Whatever a CRM without an upsert raises (a throttle, an outage, a rejection: a
        # 401/403 on the POST), none of the call's creates was applied: it returns what it
        # did as outcomes, a create in doubt and the work done before a rejection too
        # (`CrmWithoutUpsert`). So their flights are over, and cost no wait. (A crash
        # before this is written leaves them, and the next run waits them out.)
        doubts = {c.lead_id: self.doubts[c.lead_id] for c in contacts if c.lead_id in self.flying}
        error = request_error(exc)
        try:
            async with unit_of_work(self.sessionmaker) as session:
                await _record_request_error(session, contacts, error, doubts)
        except Exception as exc:  # noqa: BLE001 - logged; the CRM's error is raised
            log.warning("crm.delivery.note_failed", error_class=type(exc).__name__)

    async def _create_leaves(self, contact: CrmContact) -> None:
        """A CRM without an upsert is about to send a create of `contact`: its lead is
        marked in flight, committed before the request leaves (even if the lane is
        cancelled meanwhile: then the create does not leave, and the mark only costs the
        lead a wait)."""
        lead_id = contact.lead_id
        doubt = self.doubts.get(lead_id, CreateDoubt())
        flight = CreateDoubt(doubt.since, sent_at=self.clock()).recorded(lead_id)
        self.flying.add(lead_id)

        async def mark() -> None:
            async with unit_of_work(self.sessionmaker) as session:
                conn = await session.connection()
                await conn.execute(_RECORD_DOUBT, [flight])

        await _to_the_end(mark())

    async def _call(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        if self.marks_creates:
            crm = cast(CrmWithoutUpsert, self.crm)
            return await crm.upsert(contacts, before_create=self._create_leaves)
        return await self.crm.upsert(contacts)

    async def _upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        """The CRM call, in a span linked to each lead's own (`Lead.trace_parent`)."""
        if self.tracer is None:
            return await self._call(contacts)
        traced = [self.traced.get(c.lead_id, ("", None)) for c in contacts]
        with self.tracer.start_as_current_span(
            "crm.deliver.batch",
            links=links_to(parent for _, parent in traced),
            attributes={
                "cauce.crm": self.crm.name,
                "cauce.leads.batch_size": len(contacts),
                # Cauce's random ids (no personal data): find the delivery of a lead.
                "cauce.lead.ids": [uid for uid, _ in traced if uid],
            },
        ):
            return await self._call(contacts)

    async def lane(self) -> None:
        report = self.report
        while True:
            if self.monotonic() >= self.deadline:
                report.out_of_time = True
                return
            contacts = await _to_the_end(self._next_batch())
            if not contacts:
                return
            try:
                try:
                    # A cancellation may cut this.
                    outcomes = await self._upsert(contacts)
                except (CrmThrottled, CrmUnavailable, CrmRejected) as exc:
                    await _to_the_end(self._record_failure(contacts, exc))
                    raise
                report.batches += 1
                verdicts = await _to_the_end(self._record(contacts, outcomes))
            finally:
                self.in_flight.difference_update(c.lead_id for c in contacts)
                self.keys_in_flight.difference_update(c.key for c in contacts)
                for contact in contacts:
                    self.sent.pop(contact.lead_id, None)
                    self.traced.pop(contact.lead_id, None)
                    self.doubts.pop(contact.lead_id, None)
                    self.flying.discard(contact.lead_id)
            retry_at = {o.lead_id: o.retry_at for o in outcomes if o.retry_at is not None}
            for sent, verdict in verdicts:
                if verdict == "synced":
                    report.synced += 1
                elif verdict == "superseded":
                    report.superseded += 1
                elif verdict == "erased":
                    report.erased_again.append(sent.lead_id)
                elif verdict == "failed":
                    report.failed_for_good.append(sent.lead_id)
                    self.skip.add(sent.lead_id)
                elif verdict == "wait":
                    report.waiting[sent.lead_id] = retry_at[sent.lead_id]
                    self.skip.add(sent.lead_id)
                else:
                    report.retry_later.append(sent.lead_id)
                    self.skip.add(sent.lead_id)
            if self.only is not None:
                self.skip.update(contact.lead_id for contact in contacts)
            log.info(
                "crm.delivery.batch",
                crm=self.crm.name,
                size=len(contacts),
                synced=report.synced,
                failed=len(report.failed_for_good),
            )
            if self.on_batch is not None:
                self.on_batch(report)

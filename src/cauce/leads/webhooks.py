"""Inbound HubSpot webhooks: verify, record once, process later in a job.

HubSpot signs each request (signature v3): base64(HMAC-SHA256(app secret, method + URI +
body + timestamp)) in `X-HubSpot-Signature-v3`, the timestamp (ms) in
`X-HubSpot-Request-Timestamp`; requests older than 5 minutes are refused, which bounds
replays. Events arrive in batches, may repeat and may come out of order: each is
recorded once in the inbox keyed by (source, eventId); a lead only takes a change that
happened after the last one it applied (`crm_event_at`).

Deletions: `contact.deletion` (the contact deleted in HubSpot, to its recycle bin) marks
the lead (`crm_deleted_at`, shown as `sync.crm_deleted_at`); `contact.privacyDeletion`
(a GDPR deletion there: the person asked the company to erase their data) erases the lead
here as `DELETE /v1/leads/{id}` does, by the job's `Erase` (`crm_erasure`). An erased lead
takes no event: among them is the CRM's word on an erasure Cauce asked for itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import Settings
from cauce.core.db.base import utcnow
from cauce.core.errors import CauceError, MalformedBody, ValidationFailed
from cauce.core.jobs.ports import JobQueue
from cauce.leads.errors import LeadErased
from cauce.leads.matching.known import KnownLeads
from cauce.leads.models import Lead, LeadEvent, WebhookInboxEvent

log = structlog.get_logger("cauce.leads.webhooks")

SOURCE_HUBSPOT = "hubspot"
MAX_AGE = timedelta(minutes=5)
MAX_EVENTS = 1000
INBOUND_TASK = "crm.inbound"
INBOUND_KEY = "crm-inbound"  # its jobs' dedupe key and lock
PRIVACY_DELETION = "contact.privacyDeletion"
CRM_ACTOR = "crm"

Erase = Callable[[AsyncSession, str], Awaitable[None]]
"""Erase the lead with this public id in the caller's transaction (`crm_erasure`)."""

# HubSpot property values -> Cauce lead status (the outcomes scoring learns from).
STATUS_FROM_CRM: Mapping[str, Mapping[str, str]] = {
    "lifecyclestage": {
        "customer": "won",
        "evangelist": "won",
        "opportunity": "qualified",
        "salesqualifiedlead": "qualified",
        "other": "lost",
    },
    "hs_lead_status": {
        "UNQUALIFIED": "lost",
        "BAD_TIMING": "lost",
        "IN_PROGRESS": "working",
        "CONNECTED": "working",
        "OPEN_DEAL": "qualified",
    },
}


class InvalidSignature(CauceError):
    """The request is not signed by HubSpot with our secret, or too old."""

    status_code = 401
    code = "invalid_signature"
    title = "Invalid webhook signature"


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's v3 signature of a request."""
    message = method.upper().encode() + uri.encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_uri(received: str, query: str, configured: str | None) -> str:
    """The URI HubSpot signed: the URL it was told to post to (`configured`, the setting
    `CAUCE_CRM__WEBHOOK_URL`) with the request's query string, or, without that setting,
    the URL as received (which a proxy that terminates TLS turns from https to http);
    with the escapes HubSpot decodes before signing (`%3A` for `:`...) decoded."""
    uri = received if configured is None else f"{configured}?{query}" if query else configured
    return _SIGNED_ESCAPES.sub(lambda m: _DECODED[m.group(0).upper()], uri)


# HubSpot's v3 signature is over the URI with these escapes decoded (its documentation:
# `:/?@!$'()*,;`), the rest left as sent.
_DECODED = {f"%{ord(c):02X}": c for c in ":/?@!$'()*,;"}
_SIGNED_ESCAPES = re.compile("|".join(_DECODED), re.IGNORECASE)


def verify_hubspot(
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> None:
    """Raise `InvalidSignature` unless the request is HubSpot's, signed within 5 minutes."""
    signature = headers.get("x-hubspot-signature-v3")
    timestamp = headers.get("x-hubspot-request-timestamp")
    if not signature or not timestamp:
        raise InvalidSignature("missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp")
    try:
        sent_at = datetime.fromtimestamp(int(timestamp) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidSignature("X-HubSpot-Request-Timestamp is not a time in ms") from None
    current = now or utcnow()
    if abs(current - sent_at) > MAX_AGE:
        raise InvalidSignature("the request timestamp is more than 5 minutes away")
    expected = hubspot_signature(secret, method, uri, body, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise InvalidSignature("the signature does not match")


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One HubSpot event as recorded."""

    event_id: str
    payload: dict[str, Any]
    occurred_at: datetime | None


def parse_events(body: bytes) -> list[InboundEvent]:
    """HubSpot's batch (a JSON array of events) as inbox rows; 422 for anything else."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # As every route answers a body that is no JSON (ADR 0003): 400, where it stopped.
        reason = f"{exc.msg} at offset {exc.pos}"
        raise MalformedBody(
            f"the body is not valid JSON: {reason}",
            errors=[{"pointer": "", "detail": reason, "type": "json_invalid"}],
        ) from None
    if not isinstance(data, list) or len(data) > MAX_EVENTS:
        raise ValidationFailed(f"expected a JSON array of at most {MAX_EVENTS} events")
    events = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or item.get("eventId") is None:
            raise ValidationFailed(f"event {index} has no eventId")
        occurred = item.get("occurredAt")
        occurred_at = None
        if isinstance(occurred, int | float) and not isinstance(occurred, bool) and occurred > 0:
            try:
                occurred_at = datetime.fromtimestamp(occurred / 1000, UTC)
            except (ValueError, OverflowError, OSError):
                raise ValidationFailed(
                    f"event {index} has an occurredAt out of range (milliseconds since 1970)"
                ) from None
        events.append(InboundEvent(str(item["eventId"])[:100], item, occurred_at))
    return events


async def record_events(session: AsyncSession, source: str, events: Sequence[InboundEvent]) -> int:
    """Insert the events not seen before; returns how many were new."""
    if not events:
        return 0
    rows = [
        {
            "source": source,
            "event_id": e.event_id,
            "payload": e.payload,
            "occurred_at": e.occurred_at,
            "received_at": utcnow(),
        }
        for e in events
    ]
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(WebhookInboxEvent)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(WebhookInboxEvent.id)
    )
    return len((await session.execute(statement)).all())


def _status_change(payload: Mapping[str, Any]) -> str | None:
    name = str(payload.get("propertyName") or "")
    value = str(payload.get("propertyValue") or "")
    mapping = STATUS_FROM_CRM.get(name, {})
    return mapping.get(value) or mapping.get(value.lower())


def crm_erasure(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    known: KnownLeads | None = None,
) -> Erase:
    """The erasure a `contact.privacyDeletion` asks for: `DELETE /v1/leads/{id}`'s own
    (`service_edit.erase`: personal data removed, a tombstone kept, the CRM told), by the
    actor `crm`. Its CRM delete job finds the contact gone (HubSpot deleted it first: a
    404, which the adapter reads as nothing to delete) and ends. The tombstone says
    `erased` from the start: the CRM owes nothing, whatever that job meets."""
    # Imported here: service_edit imports tasks, which imports this module.
    from cauce.leads import service_edit
    from cauce.leads.service import LeadsRuntime

    # What the erasure uses: the settings, the queue of its CRM job, and the process's
    # cache of known leads (`known`), which forgets the lead (no other process's cache
    # serves an erased lead: `matching.known`).
    runtime = LeadsRuntime(settings=settings, sessionmaker=sessionmaker, queue=queue)
    if known is not None:
        runtime.known = known

    async def erase(session: AsyncSession, uid: str) -> None:
        # Many in one transaction (`process_inbox`): the statistics are asked for once,
        # after the last (the inbound job does), so no erasure waits on another's request.
        await service_edit.erase(session, runtime, uid, CRM_ACTOR, crm_gone=True, analyze=False)

    return erase


def _mark_deleted(session: AsyncSession, lead: Lead, at: datetime) -> None:
    lead.crm_deleted_at = at
    lead.crm_event_at = at
    session.add(LeadEvent(lead_id=lead.id, action="crm_deleted", changes={}, actor=CRM_ACTOR))


async def _privacy_deletion(
    session: AsyncSession, lead: Lead, at: datetime, erase: Erase | None
) -> str:
    # Whatever its date: an erasure is no state a later change supersedes, and HubSpot
    # sends a `contact.deletion` with it, at the same time, which may be taken first.
    if erase is None:
        # Nothing to erase with (a caller without a job queue): the contact is gone from
        # the CRM, which the lead shows, and the log says what is left to do.
        _mark_deleted(session, lead, max(at, lead.crm_event_at or at))
        log.warning("crm.inbound.privacy_deletion_not_erased", lead=lead.uid)
        return "deleted:not_erased"
    try:
        await erase(session, lead.uid)
    except LeadErased:  # erased meanwhile (an API call, another worker)
        return "ignored:erased"
    log.info("crm.inbound.erased", lead=lead.uid)
    return "erased"


# HubSpot's object type id of contacts: generic subscriptions (`object.deletion`,
# `object.propertyChange`) name their object's type in `objectTypeId`.
CONTACT_TYPE_ID = "0-1"


def _contact_subscription(payload: Mapping[str, Any]) -> str | None:
    """The event's subscription as a contact's (`contact.deletion`...), or None when it is
    about another kind of object: a company's or a deal's id may equal a contact's, and
    Cauce's leads are contacts."""
    subscription = str(payload.get("subscriptionType") or "")
    kind, _, action = subscription.partition(".")
    if kind == "contact":
        return subscription
    if kind == "object" and str(payload.get("objectTypeId") or "") == CONTACT_TYPE_ID:
        return f"contact.{action}"
    return None


async def _apply(session: AsyncSession, event: WebhookInboxEvent, erase: Erase | None) -> str:
    payload = event.payload
    subscription = _contact_subscription(payload)
    if subscription is None:
        return "ignored:not_a_contact"
    object_id = payload.get("objectId")
    if object_id is None:
        return "ignored:no_object"
    # Every live lead on this contact (usually one; more after a merge in the CRM, say):
    # the event is about each, a GDPR deletion above all.
    leads = (
        await session.scalars(select(Lead).where(Lead.crm_id == str(object_id)).order_by(Lead.id))
    ).all()
    if not leads:
        return "ignored:unknown_contact"
    live = [lead for lead in leads if lead.erased_at is None]
    if not live:
        # A tombstone takes nothing more; often this is the CRM telling of an erasure
        # Cauce asked for itself (`DELETE /v1/leads/{id}`, then the CRM's events of it).
        return "ignored:erased"
    # An event dated after its arrival counts as at its arrival (nothing happens before it
    # is told): a date a year ahead would otherwise make every later, real event older.
    at = min(event.occurred_at or event.received_at, event.received_at)
    outcomes = [await _apply_to(session, lead, subscription, payload, at, erase) for lead in live]
    return outcomes[0] if len(set(outcomes)) == 1 else ",".join(outcomes)[:64]


async def _apply_to(
    session: AsyncSession,
    lead: Lead,
    subscription: str,
    payload: Mapping[str, Any],
    at: datetime,
    erase: Erase | None,
) -> str:
    if subscription == PRIVACY_DELETION:
        return await _privacy_deletion(session, lead, at, erase)
    if lead.crm_event_at is not None and at <= lead.crm_event_at:
        return "ignored:older"
    if subscription.endswith(".deletion"):
        _mark_deleted(session, lead, at)
        return "deleted"
    if subscription.endswith(".propertyChange"):
        status = _status_change(payload)
        if status is None:
            return "ignored:property"
        previous = lead.status
        lead.status = status
        lead.crm_event_at = at
        lead.updated_at = utcnow()
        session.add(
            LeadEvent(
                lead_id=lead.id,
                action="status_changed",
                changes={"status": [previous, status], "by": payload.get("propertyName")},
                actor=CRM_ACTOR,
            )
        )
        return f"status:{status}"
    return "ignored:subscription"


async def process_inbox(
    session: AsyncSession, *, limit: int = 500, erase: Erase | None = None
) -> int:
    """Apply unprocessed events in the order they happened; returns how many.

    `erase` carries out a `contact.privacyDeletion` (`crm_erasure`); without it such an
    event only marks the lead deleted in the CRM, and logs that it was not erased."""
    events = (
        await session.scalars(
            select(WebhookInboxEvent)
            .where(WebhookInboxEvent.processed_at.is_(None))
            .order_by(
                func.coalesce(WebhookInboxEvent.occurred_at, WebhookInboxEvent.received_at),
                WebhookInboxEvent.id,
            )
            .limit(limit)
            # Two jobs at once (one running, one queued behind it, in two workers) never
            # apply one event twice (PostgreSQL; SQLite has one writer).
            .with_for_update(skip_locked=True)
        )
    ).all()
    for event in events:
        event.outcome = await _apply(session, event, erase)
        event.processed_at = utcnow()
        if not event.outcome.startswith("status:") and "propertyValue" in event.payload:
            # A value Cauce took no status from is the CRM's copy of a field, personal
            # data (an app subscribed to `email` or `phone` changes) the inbox has no use
            # for once the event is applied: an erasure of the lead would not find it.
            event.payload = {k: v for k, v in event.payload.items() if k != "propertyValue"}
    await session.flush()
    return len(events)


async def pending_count(session: AsyncSession) -> int:
    """Events recorded and not yet processed."""
    return int(
        await session.scalar(select(func.count()).where(WebhookInboxEvent.processed_at.is_(None)))
        or 0
    )

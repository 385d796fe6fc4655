"""Inbound HubSpot webhooks: v3 signatures, an inbox that records each event once, ordering."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.app import create_app
from cauce.core.config import CrmSettings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.db.migrate import upgrade
from cauce.core.errors import MalformedBody, ValidationFailed
from cauce.leads.models import Lead, LeadEvent, WebhookInboxEvent
from cauce.leads.webhooks import (
    InvalidSignature,
    hubspot_signature,
    parse_events,
    process_inbox,
    record_events,
    signed_uri,
    verify_hubspot,
)
from tests.conftest import SettingsFactory, make_settings

SECRET = "hubspot-app-secret"
URI = "https://cauce.example.com/v1/webhooks/hubspot"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _signed(body: bytes, at: datetime = NOW, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(at.timestamp() * 1000))
    return {
        "x-hubspot-request-timestamp": timestamp,
        "x-hubspot-signature-v3": hubspot_signature(secret, "POST", URI, body, timestamp),
    }


def test_a_correct_signature_passes() -> None:
    """A request signed with the app secret within 5 minutes is accepted."""
    body = b'[{"eventId": 1}]'
    verify_hubspot(SECRET, "POST", URI, body, _signed(body), now=NOW + timedelta(minutes=4))


@pytest.mark.parametrize(
    ("case", "headers_of"),
    [
        ("other secret", lambda b: _signed(b, secret="other")),
        ("too old", lambda b: _signed(b, at=NOW - timedelta(minutes=6))),
        ("from the future", lambda b: _signed(b, at=NOW + timedelta(minutes=6))),
        ("missing", lambda b: {}),
        ("bad timestamp", lambda b: {**_signed(b), "x-hubspot-request-timestamp": "soon"}),
        ("tampered body", lambda b: _signed(b + b" ")),
    ],
)
def test_bad_signatures_are_refused(case: str, headers_of: Any) -> None:
    """Wrong secret, stale or future timestamps, missing headers, altered bodies: 401."""
    body = b'[{"eventId": 1}]'
    with pytest.raises(InvalidSignature):
        verify_hubspot(SECRET, "POST", URI, body, headers_of(body), now=NOW)


@pytest.mark.parametrize("body", [b"{", b"", b"\xff[]", b"[{]"])
def test_a_body_that_is_not_json_is_malformed(body: bytes) -> None:
    """A body that is not JSON is 400 `malformed_body` saying where the parser stopped,
    as on every route (ADR 0003); it was a 422."""
    with pytest.raises(MalformedBody) as caught:
        parse_events(body)
    [error] = caught.value.extra["errors"]
    assert error["pointer"] == ""
    assert "at offset" in error["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"eventId": 1}',
        b"[1]",
        b'[{"x": 1}]',
        b'[{"eventId": 1, "occurredAt": 1e20}]',  # once a 500 (OSError, year > 9999)
        b'[{"eventId": 1, "occurredAt": 99999999999999999999}]',
    ],
)
def test_malformed_batches_are_refused(body: bytes) -> None:
    """Only a JSON array of events with ids is accepted."""
    with pytest.raises(ValidationFailed):
        parse_events(body)


@pytest.fixture
async def db(settings_factory: SettingsFactory) -> AsyncIterator[Database]:
    database = create_database(settings_factory())
    yield database
    await database.dispose()


def _event(event_id: int, crm_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "objectId": int(crm_id),
        "occurredAt": int(at.timestamp() * 1000),
        "subscriptionType": "contact.propertyChange",
        **fields,
    }


async def _lead(db: Database, crm_id: str) -> int:
    async with unit_of_work(db.sessionmaker) as session:
        lead = Lead(uid=str(uuid.uuid4()), email="ana@empresa.es", source="api", crm_id=crm_id)
        session.add(lead)
        await session.flush()
        return lead.id


async def test_repeated_events_are_recorded_once(db: Database) -> None:
    """HubSpot repeats deliveries: the inbox keeps one row per eventId."""
    body = orjson.dumps([_event(1, "501", NOW), _event(2, "501", NOW)])
    async with unit_of_work(db.sessionmaker) as session:
        assert await record_events(session, "hubspot", parse_events(body)) == 2
    async with unit_of_work(db.sessionmaker) as session:
        assert await record_events(session, "hubspot", parse_events(body)) == 0
    async with db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookInboxEvent)) == 2


async def test_lifecycle_changes_set_status_and_older_events_lose(db: Database) -> None:
    """`customer` makes the lead won; an older reordered change arriving later is ignored."""
    lead_id = await _lead(db, "501")
    newer = _event(10, "501", NOW, propertyName="lifecyclestage", propertyValue="customer")
    older = _event(
        11,
        "501",
        NOW - timedelta(minutes=1),
        propertyName="hs_lead_status",
        propertyValue="UNQUALIFIED",
    )
    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps([newer])))
        assert await process_inbox(session) == 1
    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps([older])))
        assert await process_inbox(session) == 1
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        assert lead.status == "won"
        outcomes = (await session.scalars(select(WebhookInboxEvent.outcome))).all()
        assert sorted(o or "" for o in outcomes) == ["ignored:older", "status:won"]
        history = (await session.scalars(select(LeadEvent.action))).all()
        assert history == ["status_changed"]


async def test_deletion_marks_the_lead_and_unknown_contacts_are_ignored(db: Database) -> None:
    """A CRM deletion marks the lead; events about contacts Cauce never sent are ignored."""
    lead_id = await _lead(db, "777")
    events = [
        {**_event(20, "777", NOW), "subscriptionType": "contact.deletion"},
        _event(21, "999", NOW, propertyName="lifecyclestage", propertyValue="customer"),
    ]
    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps(events)))
        assert await process_inbox(session) == 2
        assert await process_inbox(session) == 0
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        assert lead.crm_deleted_at is not None


@pytest.mark.parametrize(
    ("subscription", "type_id", "deleted"),
    [
        ("company.deletion", None, False),
        ("deal.deletion", None, False),
        ("object.deletion", "0-2", False),  # a company, in HubSpot's generic format
        ("object.deletion", "0-1", True),  # a contact, in HubSpot's generic format
        ("contact.deletion", None, True),
    ],
)
async def test_only_contact_events_reach_leads(
    db: Database, subscription: str, type_id: str | None, deleted: bool
) -> None:
    """A company's (a deal's...) id may equal a contact's: an event about another kind of
    object never touches the lead whose contact has that id."""
    lead_id = await _lead(db, "4242")
    event = {**_event(40, "4242", NOW), "subscriptionType": subscription}
    if type_id is not None:
        event["objectTypeId"] = type_id
    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps([event])))
        assert await process_inbox(session) == 1
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        assert (lead.crm_deleted_at is not None) is deleted
        outcome = await session.scalar(select(WebhookInboxEvent.outcome))
        assert outcome == ("deleted" if deleted else "ignored:not_a_contact")


async def test_an_event_reaches_every_live_lead_on_its_contact(db: Database) -> None:
    """Two leads synced to one contact (a merge in the CRM, say) and a tombstone on it too:
    a GDPR deletion erases both live leads (it took one, and none when it met the
    tombstone first); a lifecycle change sets both."""
    tombstone = await _lead(db, "5150")
    first, second = await _lead(db, "5150"), await _lead(db, "5150")
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(
            update(Lead).where(Lead.id == tombstone).values(erased_at=NOW, email=None)
        )
    won = _event(50, "5150", NOW, propertyName="lifecyclestage", propertyValue="customer")
    erased: list[str] = []

    async def erase(session: AsyncSession, uid: str) -> None:
        erased.append(uid)

    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps([won])))
        assert await process_inbox(session, erase=erase) == 1
        privacy = {
            **_event(51, "5150", NOW + timedelta(seconds=1)),
            "subscriptionType": "contact.privacyDeletion",
        }
        await record_events(session, "hubspot", parse_events(orjson.dumps([privacy])))
        assert await process_inbox(session, erase=erase) == 1
    async with db.sessionmaker() as session:
        leads = {lead.id: lead for lead in (await session.scalars(select(Lead))).all()}
        assert (leads[first].status, leads[second].status) == ("won", "won")
        assert sorted(erased) == sorted([leads[first].uid, leads[second].uid])


async def test_the_inbox_keeps_no_property_value_it_took_nothing_from(db: Database) -> None:
    """An app subscribed to email or phone changes gets their values; once applied, the
    inbox keeps an event without a value Cauce took no status from (personal data an
    erasure of the lead would not find), and keeps the lifecycle stage it did."""
    await _lead(db, "888")
    events = [
        _event(30, "888", NOW, propertyName="email", propertyValue="ana.privado@gmail.com"),
        _event(31, "888", NOW, propertyName="lifecyclestage", propertyValue="customer"),
    ]
    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps(events)))
        assert await process_inbox(session) == 2
    async with db.sessionmaker() as session:
        rows = (
            await session.scalars(select(WebhookInboxEvent).order_by(WebhookInboxEvent.id))
        ).all()
        assert [row.outcome for row in rows] == ["ignored:property", "status:won"]
        assert "propertyValue" not in rows[0].payload
        assert rows[0].payload["propertyName"] == "email"
        assert rows[1].payload["propertyValue"] == "customer"


@pytest.mark.parametrize(
    ("webhook_url", "signed_for", "status"),
    [
        # Behind a proxy that terminates TLS: HubSpot signed the https URL it called,
        # Cauce receives http. With the URL configured, the signature checks out.
        (URI, URI + "?portal=1", 204),
        (URI, "http://cauce.test/v1/webhooks/hubspot?portal=1", 401),
        # Without the setting the URL as received is what must be signed.
        (None, "http://cauce.test/v1/webhooks/hubspot?portal=1", 204),
        (None, URI + "?portal=1", 401),
    ],
)
async def test_the_signed_url_is_the_configured_one_behind_a_proxy(
    settings_factory: SettingsFactory, webhook_url: str | None, signed_for: str, status: int
) -> None:
    """`CAUCE_CRM__WEBHOOK_URL` is the URL HubSpot was told to call: the signature is
    checked against it (with the request's query string), not the URL a proxy forwarded."""
    settings = settings_factory(
        crm={"provider": "none", "webhook_secret": SECRET, "webhook_url": webhook_url},
        jobs={"embedded_worker": False},
    )
    app = create_app(settings)
    body = orjson.dumps([_event(1, "501", datetime.now(UTC))])
    timestamp = str(int(datetime.now(UTC).timestamp() * 1000))
    headers = {
        "x-hubspot-request-timestamp": timestamp,
        "x-hubspot-signature-v3": hubspot_signature(SECRET, "POST", signed_for, body, timestamp),
        "content-type": "application/json",
    }
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cauce.test") as client:
            response = await client.post(
                "/v1/webhooks/hubspot?portal=1", content=body, headers=headers
            )
    assert response.status_code == status, response.text


def test_the_webhook_url_setting_is_an_http_url_without_query() -> None:
    """`CAUCE_CRM__WEBHOOK_URL` is an http(s) URL; a query, another scheme or a space is
    refused at start-up."""
    assert CrmSettings(webhook_url=URI).webhook_url == URI
    for bad in ("cauce.example.com/hook", URI + "?x=1", "ftp://h/x", "https://h/ x"):
        with pytest.raises(ValueError, match="webhook_url"):
            CrmSettings(webhook_url=bad)


def test_the_signed_uri_decodes_what_hubspot_decodes() -> None:
    """HubSpot signs the URI with `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`
    decoded (either case) and every other escape as sent."""
    raw = "http://cauce.test/v1/webhooks/hubspot?next=%2Fa%3Fb%3dc%3A%40%20x%2c%3b"
    assert signed_uri(raw, raw.split("?", 1)[1], None) == (
        "http://cauce.test/v1/webhooks/hubspot?next=/a?b%3dc:@%20x,;"
    )
    assert signed_uri(raw, "q=%28%29", URI) == URI + "?q=()"


async def test_an_event_dated_in_the_future_does_not_hide_later_ones(db: Database) -> None:
    """An event dated a year ahead counts as at its arrival: before, it made every later,
    real change look older and be ignored (found by a black-box audit of CRM sync)."""
    lead_id = await _lead(db, "502")
    ahead = datetime.now(UTC) + timedelta(days=365)
    future = _event(20, "502", ahead, propertyName="lifecyclestage", propertyValue="customer")
    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps([future])))
        assert await process_inbox(session) == 1
    later = _event(
        21,
        "502",
        datetime.now(UTC) + timedelta(seconds=1),
        propertyName="hs_lead_status",
        propertyValue="UNQUALIFIED",
    )
    async with unit_of_work(db.sessionmaker) as session:
        await record_events(session, "hubspot", parse_events(orjson.dumps([later])))
        assert await process_inbox(session) == 1
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        assert lead.status == "lost"


async def test_migration_0017_drops_the_values_applied_events_kept(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Events applied before 0017 lose the property value Cauce took no status from; a
    lifecycle stage it took stays, and so does an event not applied yet."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    rows = [
        (
            "1",
            {"propertyName": "email", "propertyValue": "ana.privado@gmail.com"},
            "ignored:property",
        ),
        ("2", {"propertyName": "lifecyclestage", "propertyValue": "customer"}, "status:won"),
        ("3", {"propertyName": "phone", "propertyValue": "+34612345678"}, None),
    ]
    try:
        await upgrade(db, "0016")
        async with db.engine.begin() as conn:
            for event_id, payload, outcome in rows:
                done = "CURRENT_TIMESTAMP" if outcome else "NULL"
                await conn.execute(
                    text(
                        "INSERT INTO webhook_inbox (source, event_id, payload, received_at, "
                        f"processed_at, outcome) VALUES ('hubspot', :id, :payload, "
                        f"CURRENT_TIMESTAMP, {done}, :outcome)"
                    ),
                    {"id": event_id, "payload": json.dumps(payload), "outcome": outcome},
                )
        await upgrade(db)
        async with db.sessionmaker() as session:
            kept = {
                row.event_id: row.payload
                for row in (await session.scalars(select(WebhookInboxEvent))).all()
            }
        assert kept == {
            "1": {"propertyName": "email"},
            "2": rows[1][1],
            "3": rows[2][1],
        }
    finally:
        await db.dispose()

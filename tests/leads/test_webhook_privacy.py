"""HubSpot's deletions reach Cauce: a GDPR deletion there (`contact.privacyDeletion`)
erases the lead here as `DELETE /v1/leads/{id}` does, and a plain deletion
(`contact.deletion`) shows its date in the lead's sync state.

Through the real app, its job engine and the HubSpot adapter, against the sandbox CRM,
whose own signed webhooks are posted into the app (as HubSpot would post them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select

from cauce.app import Resources, create_app, job_worker_for
from cauce.leads.models import Lead, LeadEvent, WebhookInboxEvent
from cauce.leads.webhooks import hubspot_signature
from cauce.sandbox import SandboxCrm, SandboxCrmConfig, start_sandbox_crm
from cauce.sandbox.config import DEFAULT_WEBHOOK_SECRET
from tests.conftest import SettingsFactory

HOOK = "http://cauce.test/v1/webhooks/hubspot"
CONTACTS = "/crm/v3/objects/contacts"
LUCIA = {
    "email": "lucia.moreno@bodegasvera.es",
    "first_name": "Lucía",
    "last_name": "Moreno Vera",
    "phone": "+34 612 345 678",
    "company": "Bodegas Vera",
    "country": "ES",
}


@dataclass
class Hub:
    """Cauce (`api`, with every leads scope and jobs:admin) delivering to the sandbox
    HubSpot (`crm`, its API as a portal user would call it), which posts its webhooks
    into Cauce."""

    app: FastAPI
    api: httpx.AsyncClient
    sandbox: SandboxCrm
    crm: httpx.AsyncClient

    @property
    def resources(self) -> Resources:
        """The app's resources."""
        resources: Resources = self.app.state.resources
        return resources

    async def settle(self) -> None:
        """Until nothing moves: HubSpot's webhooks delivered, then Cauce's jobs run (a job
        may write to HubSpot, which sends more webhooks)."""
        dispatcher = self.sandbox.state.webhooks
        assert dispatcher is not None
        for _ in range(10):
            published = dispatcher.stats.events_published
            deadline = time.monotonic() + 10
            # Polled: the sandbox's queue has no event to wait on.
            while dispatcher.pending and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert dispatcher.pending == 0, "the sandbox's webhooks were not delivered"
            await job_worker_for(self.resources).run_until_idle(30)
            if dispatcher.stats.events_published == published and not dispatcher.pending:
                assert dispatcher.stats.batches_dropped == 0, "Cauce refused a webhook"
                return
        raise AssertionError("HubSpot and Cauce kept writing to each other")

    async def post_events(self, events: list[dict[str, Any]]) -> httpx.Response:
        """Post `events` to the webhook as HubSpot signs them now."""
        body = orjson.dumps(events)
        stamp = str(int(datetime.now(UTC).timestamp() * 1000))
        headers = {
            "content-type": "application/json",
            "x-hubspot-request-timestamp": stamp,
            "x-hubspot-signature-v3": hubspot_signature(
                DEFAULT_WEBHOOK_SECRET, "POST", HOOK, body, stamp
            ),
        }
        return await self.api.post(HOOK, content=body, headers=headers)

    async def create_lead(self) -> tuple[str, str]:
        """Lucía's lead, synced to HubSpot: its id and its contact's id there."""
        created = await self.api.post("/v1/leads", json=LUCIA)
        assert created.status_code == 201, created.text
        uid = str(created.json()["id"])
        await self.settle()
        sync = (await self.api.get(f"/v1/leads/{uid}")).json()["sync"]
        assert sync["status"] == "synced"
        assert sync["crm_id"]
        return uid, str(sync["crm_id"])

    async def lead_row(self, uid: str) -> Lead:
        """The lead's row as stored."""
        async with self.resources.db.sessionmaker() as session:
            lead = await session.scalar(select(Lead).where(Lead.uid == uid))
            assert lead is not None
            return lead

    async def history(self, uid: str) -> list[tuple[str, str | None]]:
        """(action, actor) of the lead's history lines, oldest first."""
        lead = await self.lead_row(uid)
        async with self.resources.db.sessionmaker() as session:
            rows = await session.execute(
                select(LeadEvent.action, LeadEvent.actor)
                .where(LeadEvent.lead_id == lead.id)
                .order_by(LeadEvent.id)
            )
            return [(action, actor) for action, actor in rows.all()]

    async def inbox(self, subscription: str) -> list[WebhookInboxEvent]:
        """The recorded webhook events of this subscription type, in arrival order."""
        async with self.resources.db.sessionmaker() as session:
            rows = await session.scalars(select(WebhookInboxEvent).order_by(WebhookInboxEvent.id))
            return [e for e in rows.all() if e.payload.get("subscriptionType") == subscription]

    async def jobs(self, **params: str) -> list[dict[str, Any]]:
        """`GET /v1/jobs` with these filters."""
        response = await self.api.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@pytest.fixture
async def hub(settings_factory: SettingsFactory) -> AsyncIterator[Hub]:
    """The sandbox HubSpot and Cauce wired to each other, both ways."""
    served: dict[str, FastAPI] = {}

    async def into_cauce(url: str, body: bytes, headers: Any) -> int:
        transport = httpx.ASGITransport(app=served["app"])
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.post(url, content=body, headers=dict(headers))).status_code

    sandbox = await start_sandbox_crm(
        SandboxCrmConfig(webhook_url=HOOK, webhook_retry_base_seconds=0.01, seed=1),
        webhook_transport=into_cauce,
    )
    settings = settings_factory(
        crm={
            "provider": "hubspot",
            "token": sandbox.token,
            "base_url": sandbox.url,
            "allow_hosts": ("127.0.0.1",),
            "webhook_secret": DEFAULT_WEBHOOK_SECRET,
        },
        jobs={"embedded_worker": False},
    )
    app = create_app(settings)
    served["app"] = app
    try:
        async with LifespanManager(app):
            resources: Resources = app.state.resources
            key = await resources.api_keys.create(
                "t", ["leads:read", "leads:write", "leads:admin", "jobs:admin"]
            )
            async with (
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://cauce.test",
                    headers={"Authorization": f"Bearer {key.token}"},
                ) as api,
                httpx.AsyncClient(
                    base_url=sandbox.url, headers={"Authorization": f"Bearer {sandbox.token}"}
                ) as crm,
            ):
                yield Hub(app, api, sandbox, crm)
                await sandbox.stop()  # before the app: no webhook into a stopped app
    finally:
        await sandbox.stop()


async def test_a_gdpr_deletion_in_hubspot_erases_the_lead_here(hub: Hub) -> None:
    """A contact deleted for privacy in HubSpot (the person asked to be erased) is erased
    in Cauce as `DELETE /v1/leads/{id}` erases it: no personal data, a tombstone (410),
    not found by search, an `erased` history line by the CRM; the erasure's CRM delete
    job finds the contact gone and ends without a failure; a replayed event does nothing
    more. Before, the event was ignored and the person's data stayed in Cauce."""
    uid, crm_id = await hub.create_lead()
    known = hub.resources.leads.known if hub.resources.leads is not None else None
    assert known is not None
    lead_id = (await hub.lead_row(uid)).id
    assert lead_id in known  # the lead's match fields, held in memory for intake

    deleted = await hub.crm.post(f"{CONTACTS}/gdpr-delete", json={"objectId": crm_id})
    assert deleted.status_code == 204
    await hub.settle()

    assert lead_id not in known  # forgotten by the process, as an erasure by the API does
    gone = await hub.api.get(f"/v1/leads/{uid}")
    assert gone.status_code == 410, gone.text
    assert gone.json()["code"] == "lead_erased"
    row = await hub.lead_row(uid)
    assert row.erased_at is not None
    personal = ("email", "first_name", "last_name", "phone", "company", "other_emails")
    assert {name: getattr(row, name) for name in personal} == dict.fromkeys(personal)
    for words in ("lucia.moreno@bodegasvera.es", "Moreno", "612345678", "Bodegas Vera"):
        found = await hub.api.get("/v1/leads", params={"q": words})
        assert found.json()["items"] == [], words
    assert uid not in [item["id"] for item in (await hub.api.get("/v1/leads")).json()["items"]]
    history = await hub.history(uid)
    assert history[-1] == ("erased", "crm")
    assert [a for a, _ in history].count("erased") == 1

    erasures = await hub.jobs(task="crm.erase")
    assert [job["status"] for job in erasures] == ["succeeded"]
    assert await hub.jobs(status="failed") == []
    stats = (await hub.crm.get("/_sandbox/stats")).json()
    assert stats["contacts"] == 0
    assert stats["created_total"] == 1  # nothing sent the contact back
    [event] = await hub.inbox("contact.privacyDeletion")
    assert event.outcome == "erased"

    replay = await hub.post_events([event.payload])
    assert replay.status_code == 204
    assert replay.headers["X-Cauce-Recorded"] == "0"
    await hub.settle()
    assert await hub.history(uid) == history
    assert len(await hub.jobs(task="crm.erase")) == 1
    assert (await hub.api.get(f"/v1/leads/{uid}")).status_code == 410


async def test_the_deletion_hubspot_sends_alongside_does_not_hide_the_erasure(hub: Hub) -> None:
    """HubSpot sends a `contact.deletion` with each `contact.privacyDeletion`, at the same
    time: taken first, it must not make the erasure look older and be ignored."""
    uid, crm_id = await hub.create_lead()
    at = int(datetime.now(UTC).timestamp() * 1000)
    common = {"portalId": 62515, "occurredAt": at, "objectId": int(crm_id)}
    events = [
        {**common, "eventId": 9001, "subscriptionType": "contact.deletion"},
        {**common, "eventId": 9002, "subscriptionType": "contact.privacyDeletion"},
    ]
    response = await hub.post_events(events)
    assert response.status_code == 204
    assert response.headers["X-Cauce-Recorded"] == "2"
    await hub.settle()

    assert (await hub.api.get(f"/v1/leads/{uid}")).status_code == 410
    assert (await hub.lead_row(uid)).email is None
    history = await hub.history(uid)
    assert [action for action, _ in history] == ["created", "crm_deleted", "erased"]
    assert history[-1] == ("erased", "crm")
    # The contact was still in HubSpot: the erasure's job deleted it, and HubSpot's word
    # of that deletion came back to the tombstone.
    privacy = [e.outcome for e in await hub.inbox("contact.privacyDeletion")]
    assert privacy == ["erased", "ignored:erased"]
    assert (await hub.crm.get("/_sandbox/stats")).json()["contacts"] == 0
    assert [job["status"] for job in await hub.jobs(task="crm.erase")] == ["succeeded"]
    assert await hub.jobs(status="failed") == []


async def test_an_erasure_asked_in_cauce_comes_back_from_hubspot_as_a_no_op(hub: Hub) -> None:
    """`DELETE /v1/leads/{id}` deletes the contact in HubSpot, which tells Cauce of it
    (`contact.privacyDeletion`): the tombstone takes nothing more from it."""
    uid, _ = await hub.create_lead()
    assert (await hub.api.delete(f"/v1/leads/{uid}")).status_code == 204
    await hub.settle()

    assert (await hub.crm.get("/_sandbox/stats")).json()["contacts"] == 0
    [echo] = await hub.inbox("contact.privacyDeletion")
    assert echo.outcome == "ignored:erased"
    history = await hub.history(uid)
    assert [a for a, _ in history].count("erased") == 1
    assert history[-1][0] == "erased"
    assert history[-1][1] is not None
    assert history[-1][1].startswith("apikey:")
    assert [job["status"] for job in await hub.jobs(task="crm.erase")] == ["succeeded"]


async def test_a_deletion_in_hubspot_shows_in_the_lead_until_a_sync_brings_it_back(
    hub: Hub,
) -> None:
    """A contact deleted in HubSpot (to its recycle bin) shows its date in the lead's
    `sync.crm_deleted_at`, once however often the event comes; a later change in Cauce
    syncs the lead again, which creates a new contact there: the date is then history."""
    uid, crm_id = await hub.create_lead()
    before = datetime.now(UTC) - timedelta(seconds=1)

    assert (await hub.crm.delete(f"{CONTACTS}/{crm_id}")).status_code == 204
    await hub.settle()

    sync = (await hub.api.get(f"/v1/leads/{uid}")).json()["sync"]
    deleted_at = datetime.fromisoformat(sync["crm_deleted_at"])
    assert before <= deleted_at <= datetime.now(UTC)
    assert sync["crm_id"] == crm_id
    assert (await hub.history(uid))[-1] == ("crm_deleted", "crm")
    [event] = await hub.inbox("contact.deletion")
    assert event.outcome == "deleted"

    replay = await hub.post_events([event.payload])
    assert replay.headers["X-Cauce-Recorded"] == "0"
    await hub.settle()
    assert (await hub.api.get(f"/v1/leads/{uid}")).json()["sync"] == sync
    assert [a for a, _ in await hub.history(uid)].count("crm_deleted") == 1

    # Today a later change syncs the lead again, as a new contact (see docs/leads.md).
    patched = await hub.api.patch(f"/v1/leads/{uid}", json={"job_title": "Enóloga"})
    assert patched.status_code == 200
    await hub.settle()
    again = (await hub.api.get(f"/v1/leads/{uid}")).json()["sync"]
    assert again["status"] == "synced"
    assert again["crm_id"] != crm_id
    assert again["crm_deleted_at"] is None
    assert [a for a, _ in await hub.history(uid)].count("crm_deleted") == 1

    schema = (await hub.api.get("/openapi.json")).json()["components"]["schemas"]
    assert "crm_deleted_at" in schema["SyncState"]["properties"]

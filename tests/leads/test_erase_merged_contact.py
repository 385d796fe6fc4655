"""Erasing a lead whose HubSpot contact a user merged with another lead's.

Two leads, synced to two contacts, which a HubSpot user then merges: one record (under a
new id, or the primary's), holding both leads' data, both old ids listed in its
``hs_merged_object_ids`` (tests/leads/adapters/test_hubspot_merges.py). Erasing either
lead deletes that record, as GDPR requires (the erased lead's data is in it; HubSpot has
no partial delete), and the other lead's contact goes with it.

Before the fix, the other lead was sent again only if its `crm_id` was the one the
erasure deleted by: erasing the primary's lead (found by its Cauce id) or the
secondary's (whose old id is not the other's `crm_id`) left the other lead live in Cauce
with no contact in HubSpot, silently. Now every live lead synced to the record or to an
id merged into it is sent again, as a new contact with only its own data.

End to end: the app, its `crm.erase` job and the HubSpot adapter against the sandbox, on
both databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select
from structlog.testing import capture_logs

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.db import unit_of_work
from cauce.leads.adapters import HubSpotCrm
from cauce.leads.delivery import resend_contact_of
from cauce.leads.models import Lead
from cauce.leads.ports import OBJECT_ID, CrmContact, CrmKey, UpsertOutcome
from cauce.leads.tasks import delete_at_crm
from cauce.sandbox import SandboxCrm, SandboxCrmConfig, start_sandbox_crm
from tests.conftest import SettingsFactory

SCOPES = ["leads:read", "leads:write", "leads:admin", "jobs:admin"]
WORK = {"email": "zq.work@bodegas-merge.es", "first_name": "Zulema", "last_name": "Quiroga"}
HOME = {"email": "yx.home@correo-merge.es", "first_name": "Yolanda", "last_name": "Xirau"}
# What identifies each person, in any text HubSpot holds.
NEEDLES = {
    "work": ("zq.work", "bodegas-merge", "zulema", "quiroga"),
    "home": ("yx.home", "correo-merge", "yolanda", "xirau"),
}


@asynccontextmanager
async def _hub(
    settings_factory: SettingsFactory,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, SandboxCrm]]:
    """The app, its CRM the real HubSpot adapter on the sandbox (jobs run by hand), and
    a client with every leads scope."""
    sandbox = await start_sandbox_crm(SandboxCrmConfig(seed=1))
    try:
        settings = settings_factory(
            crm={
                "provider": "hubspot",
                "token": sandbox.token,
                "base_url": sandbox.url,
                "allow_hosts": ("127.0.0.1",),
            },
            jobs={"embedded_worker": False},
        )
        app = create_app(settings)
        async with LifespanManager(app):
            resources: Resources = app.state.resources
            key = await resources.api_keys.create("merged", SCOPES)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://cauce.test",
                headers={"Authorization": f"Bearer {key.token}"},
            ) as api:
                yield app, api, sandbox
    finally:
        await sandbox.stop()


async def _drain(app: FastAPI) -> None:
    await job_worker_for(app.state.resources).run_until_idle(60)


async def _lead(app: FastAPI, uid: str) -> Lead:
    resources: Resources = app.state.resources
    async with resources.db.sessionmaker() as session:
        lead = await session.scalar(select(Lead).where(Lead.uid == uid))
        assert lead is not None
        return lead


async def _create(api: httpx.AsyncClient, person: dict[str, str]) -> str:
    created = await api.post("/v1/leads", json=person)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _patch(api: httpx.AsyncClient, uid: str, changes: dict[str, Any]) -> None:
    answer = await api.patch(
        f"/v1/leads/{uid}",
        json=changes,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text


def _holds(text: object, person: str) -> bool:
    """Whether `text` (properties, a log event) says anything of that person."""
    folded = str(text).casefold()
    return any(needle in folded for needle in NEEDLES[person])


@pytest.mark.parametrize("new_record", [True, False], ids=["new-id", "primary-id"])
@pytest.mark.parametrize("erased", ["primary", "secondary"])
async def test_erasing_a_merged_contacts_lead_sends_the_other_lead_again(
    settings_factory: SettingsFactory, erased: str, new_record: bool
) -> None:
    async with _hub(settings_factory) as (app, api, hub):
        work, home = await _create(api, WORK), await _create(api, HOME)
        await _drain(app)
        work_id, home_id = (await _lead(app, work)).crm_id, (await _lead(app, home)).crm_id
        assert work_id is not None
        assert home_id is not None
        assert work_id != home_id

        # A HubSpot user merges the home contact into the work one.
        reply = hub.state.api.merge(
            {"primaryObjectId": work_id, "objectIdToMerge": home_id}, new_record=new_record
        )
        assert reply.status == 200, reply.body
        assert reply.body is not None
        merged = str(reply.body["id"])
        assert set(hub.state.store.live) == {merged}
        # Both leads change and are delivered: the primary's lead updates the merged
        # record (its crm_id now the merged id), the secondary's fails for good (MERGED).
        await _patch(api, work, {"last_name": "Quiroga Sáenz"})
        await _patch(api, home, {"last_name": "Xirau Puig"})
        await _drain(app)
        assert (await _lead(app, work)).crm_id == merged
        secondary = await _lead(app, home)
        assert secondary.sync_status == "failed"
        assert secondary.crm_id == home_id
        assert _holds(hub.state.store.live[merged].properties, "home")

        gone, kept = (work, home) if erased == "primary" else (home, work)
        gone_person, kept_person = ("work", "home") if gone == work else ("home", "work")
        with capture_logs() as logs:
            assert (await api.delete(f"/v1/leads/{gone}")).status_code == 204
            await _drain(app)

        # The merged record is deleted for good (the erased lead's data was in it)...
        assert merged not in hub.state.store.live
        assert merged not in hub.state.store.archived
        # ...and the other lead is in HubSpot again, as a new contact with its own data.
        lead = await _lead(app, kept)
        assert lead.erased_at is None
        assert lead.sync_status == "synced", lead.last_sync_error
        assert lead.crm_id is not None
        assert lead.crm_id not in (work_id, home_id, merged)
        assert set(hub.state.store.live) == {lead.crm_id}
        props = hub.state.store.live[lead.crm_id].properties
        assert props["cauce_id"] == kept
        assert _holds(props, kept_person)
        assert not _holds(props, gone_person)
        assert (await _lead(app, gone)).sync_status == "erased"

        # An operator is told, by ids only, that the erasure took another lead's contact.
        (event,) = [e for e in logs if e["event"] == "crm.erase.merged_contact"]
        assert event["log_level"] == "warning"
        assert event["lead"] == gone
        assert event["resent"] == 1
        assert {work_id, home_id, merged} <= set(event["crm_ids"])
        assert not any(_holds(logs, person) for person in ("work", "home"))


async def test_an_unmerged_contacts_erasure_resends_no_one_and_costs_one_read(
    settings_factory: SettingsFactory,
) -> None:
    """Without a merge nothing else is sent again; the erasure by the Cauce id costs the
    one GET that says whether the record was merged, and its deletion as before."""
    async with _hub(settings_factory) as (app, api, hub):
        work, home = await _create(api, WORK), await _create(api, HOME)
        await _drain(app)
        home_id = (await _lead(app, home)).crm_id
        stats = hub.state.stats.by_endpoint
        gets, deletes, upserts = stats["get"], stats["gdpr-delete"], stats["batch/upsert"]
        with capture_logs() as logs:
            assert (await api.delete(f"/v1/leads/{work}")).status_code == 204
            await _drain(app)
        assert (stats["get"], stats["gdpr-delete"]) == (gets + 1, deletes + 1)
        assert stats["batch/upsert"] == upserts
        assert set(hub.state.store.live) == {home_id}
        lead = await _lead(app, home)
        assert (lead.sync_status, lead.crm_id) == ("synced", home_id)
        assert not [e for e in logs if e["event"] == "crm.erase.merged_contact"]


async def test_a_resend_survives_a_delivery_out_at_the_crm_meanwhile(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other lead's delivery was out at HubSpot (sent to the merged record) while
    another worker's erasure deleted that record and sent the lead again: the delivery
    records its answer after, and the lead stays to be sent, not synced to a contact
    that is gone (helper-159's review: the resend was lost before its version grew)."""
    async with _hub(settings_factory) as (app, api, hub):
        work, home = await _create(api, WORK), await _create(api, HOME)
        await _drain(app)
        work_id, home_id = (await _lead(app, work)).crm_id, (await _lead(app, home)).crm_id
        assert work_id is not None
        assert home_id is not None
        reply = hub.state.api.merge({"primaryObjectId": work_id, "objectIdToMerge": home_id})
        assert reply.body is not None
        merged = str(reply.body["id"])
        await _patch(api, work, {"last_name": "Quiroga Saenz"})  # to be sent again
        resources: Resources = app.state.resources
        real = HubSpotCrm.upsert
        erased: list[tuple[frozenset[str], int]] = []

        async def upsert_then_erase(
            self: HubSpotCrm, contacts: Sequence[CrmContact]
        ) -> list[UpsertOutcome]:
            outcomes = await real(self, contacts)
            if not erased:  # meanwhile, another worker runs the erasure of `home`
                deleted = await delete_at_crm(self, CrmKey(OBJECT_ID, home_id))
                async with unit_of_work(resources.db.sessionmaker) as session:
                    resent = await resend_contact_of(session, *deleted.crm_ids)
                erased.append((deleted.crm_ids, resent))
            return outcomes

        monkeypatch.setattr(HubSpotCrm, "upsert", upsert_then_erase)
        await _drain(app)

        # Both leads sent again (`home` is not erased in Cauce here).
        assert erased == [(frozenset({merged, work_id, home_id}), 2)]
        assert merged not in hub.state.store.live
        lead = await _lead(app, work)
        assert lead.sync_status == "synced"
        assert lead.crm_id in hub.state.store.live  # a new contact, sent again
        assert hub.state.store.live[str(lead.crm_id)].properties["lastname"] == "Quiroga Saenz"

"""An erasure reaches the CRM whatever runs first (found by a PostgreSQL scale-out audit).

- The person sends a form again right after the erasure: the new lead, keyed by the same
  email, may be upserted before the erasure's job runs, onto the erased lead's contact,
  whose Cauce id it overwrites; deleting by the erased lead's Cauce id then found nothing,
  and the erased lead's phone, company and city stayed in HubSpot for good. The job now
  also deletes the contact the lead was synced to, by its HubSpot id, and the new lead
  is sent again as a new contact with only its own data.
- A batch read before an erasure and sent after it (a worker paused past its job's
  recovery) put the erased lead back in the CRM and marked the tombstone pending: the
  tombstone stays as it is, and the lead is erased in the CRM again.

Against the sandbox HubSpot, through the real app and its jobs (`hub` fixture).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.app import job_worker_for
from cauce.core.db import unit_of_work
from cauce.leads import service_edit
from cauce.leads.adapters import build_crm
from cauce.leads.delivery import deliver
from cauce.leads.models import Lead
from cauce.leads.ports import CrmClient
from cauce.leads.tasks import erase_again
from tests.leads import test_webhook_privacy as privacy
from tests.leads.test_delivery import MemoryCrm
from tests.leads.test_webhook_privacy import CONTACTS, LUCIA, Hub

hub = privacy.hub  # the fixture: Cauce and the sandbox HubSpot wired both ways


async def _contacts(hub: Hub) -> list[dict[str, Any]]:
    """Every contact in the sandbox, with the properties Cauce sends."""
    names = "email,firstname,lastname,phone,company,city,cauce_id"
    answer = await hub.crm.get(CONTACTS, params={"limit": 100, "properties": names})
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


async def test_a_form_sent_again_after_an_erasure_keeps_nothing_of_the_erased_lead(
    hub: Hub,
) -> None:
    uid, crm_id = await hub.create_lead()
    assert (await hub.api.delete(f"/v1/leads/{uid}")).status_code == 204
    again = await hub.api.post("/v1/leads", json={"email": LUCIA["email"], "first_name": "Lucía"})
    assert again.status_code == 201, again.text
    new_uid = again.json()["id"]
    # The new lead's delivery runs before the erasure's job (the order the audit met).
    resources = hub.resources
    assert resources.http is not None
    client = build_crm(resources.settings, resources.http)
    assert client is not None
    await deliver(resources.db.sessionmaker, client, resources.settings.crm)
    [taken] = await _contacts(hub)
    assert taken["id"] == crm_id  # upserted by email onto the erased lead's contact
    assert taken["properties"]["cauce_id"] == new_uid

    await hub.settle()

    [contact] = await _contacts(hub)
    properties = contact["properties"]
    assert properties["cauce_id"] == new_uid
    assert properties["email"] == LUCIA["email"]
    for erased in ("phone", "company", "city", "lastname"):
        assert not properties.get(erased), (erased, properties)
    assert contact["id"] != crm_id
    sync = (await hub.api.get(f"/v1/leads/{new_uid}")).json()["sync"]
    assert (sync["status"], sync["crm_id"]) == ("synced", contact["id"])


async def test_a_lead_erased_while_its_batch_was_out_is_erased_in_the_crm_again(
    hub: Hub,
) -> None:
    uid, _ = await hub.create_lead()
    patched = await hub.api.patch(f"/v1/leads/{uid}", json={"job_title": "Enóloga"})
    assert patched.status_code == 200  # pending again: in the next batch
    resources = hub.resources
    assert resources.http is not None
    assert resources.leads is not None
    built = build_crm(resources.settings, resources.http)
    assert built is not None
    client: CrmClient = built
    rt = resources.leads

    class PausedWorker(MemoryCrm):
        """The CRM as a paused worker's batch meets it: read before the erasure, sent
        after it, and after the erasure's job emptied the CRM."""

        async def upsert(self, contacts: Any) -> Any:
            async with unit_of_work(resources.db.sessionmaker) as session:
                await service_edit.erase(session, rt, uid, "test")
            await job_worker_for(resources).run_until_idle(30)
            assert await _contacts(hub) == []
            return await client.upsert(contacts)

    async def on_erased(session: AsyncSession, lead_ids: list[int]) -> None:
        # What the delivery job passes: the erasure is queued in the transaction that
        # found the lead erased, so nothing the job does after can undo it.
        await erase_again(session, resources.jobs, resources.settings, lead_ids)

    report = await deliver(
        resources.db.sessionmaker, PausedWorker(), resources.settings.crm, on_erased=on_erased
    )
    [back] = await _contacts(hub)  # the erased lead, in the CRM again
    assert back["properties"]["cauce_id"] == uid
    async with resources.db.sessionmaker() as session:
        tombstone = await session.scalar(select(Lead).where(Lead.uid == uid))
        assert tombstone is not None
        assert report.erased_again == [tombstone.id]
        # Its erasure is owed to the CRM again (`crm.erase` queued), until it runs.
        assert (tombstone.sync_status, tombstone.email) == ("erasing", None)
    await hub.settle()
    assert await _contacts(hub) == []
    async with resources.db.sessionmaker() as session:
        status = await session.scalar(select(Lead.sync_status).where(Lead.uid == uid))
    assert status == "erased"

"""Two live leads on one email: the CRM keeps the address on one contact (the holder's),
and hands it over when that lead stops holding it (found by an audit, helper-122).

A CRM keeps an email on one contact, so delivery sends it with one lead of those sharing
it (a family mailbox a review called two people, a team's `info@`) and sends the others
keyed by their Cauce id, without it (`delivery.email_holders`). Before:

- erasing the holder, or a PATCH moving it to another address (or clearing it), left the
  other lead, now the only one with the address, `synced` for good: its contact never got
  the email, though Cauce showed the lead synced;
- a lead still held for review (never delivered) held the address: a delivered lead with
  it was sent without it, and no contact had it;
- the holder was the lowest id, so a lead released from its hold, or one with a lower id
  given the address later, took it from the contact that had it (HubSpot: CONFLICT).

Through the API, the job worker and the in-memory CRM (`crm`), on both databases; the
erasure against the sandbox HubSpot too (`hub`), whose emails and Cauce ids are unique.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select, update

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.db import unit_of_work
from cauce.leads.delivery import deliver
from cauce.leads.models import Lead
from cauce.leads.ports import CrmContact, CrmKey
from tests.conftest import SettingsFactory
from tests.leads import test_webhook_privacy as privacy
from tests.leads.api_client import JOSE, client_with, get_lead, post_lead
from tests.leads.test_delivery import MemoryCrm
from tests.leads.test_webhook_privacy import CONTACTS, Hub

hub = privacy.hub  # the fixture: Cauce and the sandbox HubSpot wired both ways

# A family's mailbox under two people's names: the second is held, and a person tells
# them apart (`distinct`).
FAMILY = "familia.paredes@gmail.com"
JORGE = {"email": FAMILY, "full_name": "Jorge Paredes Huamán", "phone": "+51 987 654 321"}
VALENTINA = {"email": FAMILY, "full_name": "Valentina Paredes Quispe"}
# A team's mailbox under two people's names: two leads, nobody to ask.
TEAM = "info.sevilla@aceitunasdelsur.es"


async def _drain(app: FastAPI) -> None:
    resources: Resources = app.state.resources
    await job_worker_for(resources).run_until_idle(30)


def _last_sent(crm: MemoryCrm, uid: str) -> CrmContact:
    """The contact Cauce last sent for the lead `uid`."""
    for batch in reversed(crm.batches):
        for contact in batch:
            if contact.properties.get("cauce_id") == uid:
                return contact
    raise AssertionError(f"lead {uid} was never sent")


def _has_the_address(contact: CrmContact, email: str) -> bool:
    return contact.key == CrmKey("email", email) and contact.properties.get("email") == email


async def _family(api: httpx.AsyncClient, app: FastAPI) -> tuple[str, str]:
    """Jorge's and Valentina's leads on the family's mailbox, delivered: his contact has
    the address, hers is keyed by her Cauce id."""
    jorge = await post_lead(api, JORGE)
    valentina = await post_lead(api, VALENTINA)
    assert valentina["outcome"] == "held_for_review", valentina
    review = await api.post(f"/v1/leads/{valentina['id']}/review", json={"decision": "distinct"})
    assert review.status_code == 200, review.text
    await _drain(app)
    return jorge["id"], valentina["id"]


async def _synced(api: httpx.AsyncClient, uid: str) -> dict[str, Any]:
    lead = await get_lead(api, uid)
    sync: dict[str, Any] = lead["sync"]
    assert sync["status"] == "synced", sync
    return lead


async def test_erasing_the_holder_hands_the_address_to_the_other_lead(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    jorge, valentina = await _family(api, leads_app)
    assert _has_the_address(_last_sent(crm, jorge), FAMILY)
    withheld = _last_sent(crm, valentina)
    assert withheld.key == CrmKey("cauce_id", valentina)
    assert "email" not in withheld.properties

    assert (await api.delete(f"/v1/leads/{jorge}")).status_code == 204
    await _drain(leads_app)

    # Before: she stayed `synced` at the version sent without the address, never sent again.
    assert _has_the_address(_last_sent(crm, valentina), FAMILY)
    await _synced(api, valentina)


@pytest.mark.parametrize("email", ["jorge.paredes@minera-andina.pe", None])
async def test_a_patch_moving_the_holder_off_the_address_hands_it_over(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm, email: str | None
) -> None:
    """Jorge moves to his work address (or the address is taken off his lead, which keeps
    his phone): Valentina's contact gets the family's address."""
    jorge, valentina = await _family(api, leads_app)
    changed = await api.patch(f"/v1/leads/{jorge}", json={"email": email, "other_emails": []})
    assert changed.status_code == 200, changed.text
    await _drain(leads_app)

    assert _has_the_address(_last_sent(crm, valentina), FAMILY)
    await _synced(api, valentina)
    moved = _last_sent(crm, jorge)
    assert moved.properties.get("email") == email  # the new address, or a clear (None)


async def test_an_erasure_while_the_other_lead_is_in_flight_sends_it_again(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Both leads in one batch, the holder erased while the batch is out: the other,
    sent without the address, is not marked synced at that version but sent again, with
    it (before: synced without it for good)."""
    jorge = await post_lead(api, JORGE)
    valentina = await post_lead(api, VALENTINA)
    review = await api.post(f"/v1/leads/{valentina['id']}/review", json={"decision": "distinct"})
    assert review.status_code == 200, review.text
    resources: Resources = leads_app.state.resources
    crm = MemoryCrm()
    erased = False

    async def erase_jorge() -> None:
        nonlocal erased
        if not erased:
            erased = True
            assert (await api.delete(f"/v1/leads/{jorge['id']}")).status_code == 204

    crm.on_call.append(erase_jorge)
    report = await deliver(resources.db.sessionmaker, crm, resources.settings.crm)
    assert len(crm.batches[0]) == 2
    assert not _has_the_address(crm.batches[0][1], FAMILY)  # sent without it, first
    assert report.superseded == 1
    assert _has_the_address(_last_sent(crm, valentina["id"]), FAMILY)
    await _synced(api, valentina["id"])


async def test_a_lead_held_for_review_holds_no_address(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """The first lead on a team's mailbox is held for review (a namesake of José's); the
    second, a colleague, is delivered with the address (before: without it, as the held
    lead, never delivered, had the lower id, and no contact had the address). Released
    later, the held lead is sent without it: the colleague's contact has it (before: the
    lowest id took it, which HubSpot refuses with CONFLICT)."""
    await post_lead(api, JOSE)
    held = await post_lead(api, {**JOSE, "email": TEAM, "company": None, "phone": None})
    assert held["outcome"] == "held_for_review", held
    colleague = await post_lead(api, {"first_name": "Marta", "last_name": "Gil", "email": TEAM})
    assert colleague["outcome"] == "created", colleague
    await _drain(leads_app)
    assert _has_the_address(_last_sent(crm, colleague["id"]), TEAM)

    review = await api.post(f"/v1/leads/{held['id']}/review", json={"decision": "distinct"})
    assert review.status_code == 200, review.text
    await _drain(leads_app)
    released = _last_sent(crm, held["id"])
    assert released.key == CrmKey("cauce_id", held["id"])
    assert "email" not in released.properties
    await _synced(api, held["id"])
    assert _has_the_address(_last_sent(crm, colleague["id"]), TEAM)


async def test_a_lower_id_given_the_address_later_leaves_it_on_its_contact(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """Daniel's lead (phone only) is older than Ana's, delivered with the family's
    address; Daniel's lead then gets the address too (a merge filling his empty email).
    Ana's contact keeps it and Daniel's is sent without it (before: the lowest id took
    it, and HubSpot refused it with CONFLICT, for good)."""
    daniel = await post_lead(
        api, {"first_name": "Daniel", "last_name": "Rojas", "phone": "+52 55 1234 5678"}
    )
    ana = await post_lead(api, {"first_name": "Ana", "last_name": "Rojas", "email": FAMILY})
    await _drain(leads_app)
    assert _has_the_address(_last_sent(crm, ana["id"]), FAMILY)
    resources: Resources = leads_app.state.resources
    async with unit_of_work(resources.db.sessionmaker) as session:
        await session.execute(
            update(Lead)
            .where(Lead.uid == daniel["id"])
            .values(email=FAMILY, email_key=FAMILY, version=Lead.version + 1, sync_status="pending")
        )
    lead = await get_lead(api, daniel["id"])
    assert lead["email"] == FAMILY

    report = await deliver(resources.db.sessionmaker, crm, resources.settings.crm)
    assert report.synced == 1
    sent = _last_sent(crm, daniel["id"])
    assert sent.key == CrmKey("cauce_id", daniel["id"])
    assert "email" not in sent.properties


@dataclass
class Overwriting:
    """An app whose merges overwrite the email (`overwrite_fields`), with Jorge's and
    Valentina's leads on the family's mailbox, delivered; his contact has it."""

    app: FastAPI
    api: httpx.AsyncClient
    crm: MemoryCrm
    jorge: str
    valentina: str


@pytest.fixture
async def overwriting(settings_factory: SettingsFactory) -> AsyncIterator[Overwriting]:
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"dedupe": {"overwrite_fields": ["email"]}},
    )
    crm = MemoryCrm()
    app = create_app(settings, crm=crm)
    async with LifespanManager(app):
        api = await client_with(app, ["leads:read", "leads:write", "leads:admin"])
        async with api:
            jorge, valentina = await _family(api, app)
            yield Overwriting(app, api, crm, jorge, valentina)


async def _handed_over(o: Overwriting, work: str) -> None:
    """Jorge's lead has his work address now: the family's reaches Valentina's contact."""
    assert (await get_lead(o.api, o.jorge))["email"] == work
    await _drain(o.app)
    assert _has_the_address(_last_sent(o.crm, o.valentina), FAMILY)
    assert _has_the_address(_last_sent(o.crm, o.jorge), work)
    await _synced(o.api, o.valentina)


WORK = "jorge.paredes@minera-andina.pe"


async def test_a_review_merge_overwriting_the_holders_email_hands_it_over(
    overwriting: Overwriting,
) -> None:
    """With `overwrite_fields` naming the email, a lead held against Jorge (a namesake in
    his city, at his work address) merged into him by a review gives him that address:
    the family's goes to Valentina's contact."""
    o = overwriting
    namesake = {**JORGE, "email": WORK, "phone": None, "city": "Lima", "country": "PE"}
    held = await post_lead(o.api, namesake)
    assert held["outcome"] == "held_for_review", held
    assert held["duplicate"]["lead_id"] == o.jorge, held
    review = await o.api.post(f"/v1/leads/{held['id']}/review", json={"decision": "duplicate"})
    assert review.status_code == 200, review.text
    await _handed_over(o, WORK)


async def test_an_intake_merge_overwriting_the_holders_email_hands_it_over(
    overwriting: Overwriting,
) -> None:
    """With `overwrite_fields` naming the email, Jorge sends his work address with his
    phone: the merge gives his lead that address, and the family's goes to Valentina's
    contact (before: only a PATCH, an erasure or a review merge handed it over; after an
    intake merge she stayed synced without it for good)."""
    o = overwriting
    merged = await post_lead(o.api, {**JORGE, "email": WORK})
    assert (merged["outcome"], merged["id"]) == ("merged", o.jorge), merged
    await _handed_over(o, WORK)


async def _contact_of(hub: Hub, uid: str) -> dict[str, Any]:
    """The sandbox contact with this Cauce id: its properties."""
    answer = await hub.crm.get(
        f"{CONTACTS}/{uid}",
        params={"idProperty": "cauce_id", "properties": "email,firstname,cauce_id"},
    )
    assert answer.status_code == 200, answer.text
    properties: dict[str, Any] = answer.json()["properties"]
    return properties


@pytest.mark.parametrize("waiting", [False, True], ids=["alone", "after-a-waiting-delivery"])
async def test_an_erased_holders_address_reaches_the_other_contact_in_hubspot(
    hub: Hub, waiting: bool
) -> None:
    """Against the sandbox HubSpot: once Jorge is erased, Valentina's own contact has
    the address and her lead is synced. `after-a-waiting-delivery`: a delivery job was
    already waiting (another lead came in just before the erasure), so it runs before
    the erasure's CRM job, while Jorge's contact still has the address; the lead is sent
    again after it."""
    jorge = await post_lead(hub.api, JORGE)
    valentina = (await post_lead(hub.api, VALENTINA))["id"]
    review = await hub.api.post(f"/v1/leads/{valentina}/review", json={"decision": "distinct"})
    assert review.status_code == 200, review.text
    await hub.settle()
    assert not (await _contact_of(hub, valentina)).get("email")
    if waiting:
        await post_lead(hub.api, {"first_name": "Lucía", "email": "lucia@bodegasvera.es"})

    assert (await hub.api.delete(f"/v1/leads/{jorge['id']}")).status_code == 204
    await hub.settle()

    assert (await _contact_of(hub, valentina))["email"] == FAMILY
    sync = (await _synced(hub.api, valentina))["sync"]
    async with hub.resources.db.sessionmaker() as session:
        crm_id = await session.scalar(select(Lead.crm_id).where(Lead.uid == valentina))
    assert sync["crm_id"] == crm_id

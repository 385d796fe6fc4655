"""A lead synced to HubSpot before (`CrmContact.crm_id`) is sent by its Cauce id, so a
new or changed email updates its own contact in one request.

Before, such a lead was keyed by its new email: no contact had it, so HubSpot tried to
create one, found the Cauce id taken by the lead's own contact and refused the whole
batch (409 CONFLICT); the adapter then re-sent the others and the lead by its Cauce id:
three requests and a 409 for one lead (about a quarter of the batch upserts under a
mixed load, where HubSpot asks for under 5 % of error responses).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from cauce.core.config import Settings
from cauce.core.db import Database, unit_of_work
from cauce.leads.adapters import build_crm
from cauce.leads.adapters.hubspot_batch import HubSpotError, UpsertKeys
from cauce.leads.delivery import deliver
from cauce.leads.models import Lead
from cauce.leads.ports import CrmContact
from cauce.sandbox import SandboxCrm
from tests.leads.adapters.conftest import (
    MakeClients,
    MakeHubSpot,
    StartSandbox,
    WallClock,
    contact,
)

UPSERT = "batch/upsert"


@dataclass(frozen=True)
class Sent:
    """Batch upserts the sandbox answered, and how many of them 409 or 207."""

    upserts: int
    conflicts: int
    partial: int


def seen(crm: SandboxCrm) -> Sent:
    """The sandbox's counters now."""
    stats = crm.state.stats
    return Sent(stats.by_endpoint[UPSERT], stats.by_status[409], stats.by_status[207])


def since(crm: SandboxCrm, before: Sent) -> Sent:
    """What the sandbox answered after `before`."""
    now = seen(crm)
    return Sent(
        now.upserts - before.upserts,
        now.conflicts - before.conflicts,
        now.partial - before.partial,
    )


def uid(lead_id: int) -> str:
    """The Cauce id `contact()` gives a lead."""
    return f"00000000-0000-4000-8000-{lead_id:012d}"


def synced(sent: CrmContact, crm_id: str | None) -> CrmContact:
    """The contact as delivery builds it for a lead its last sync put at `crm_id`."""
    assert crm_id is not None
    return replace(sent, crm_id=crm_id)


def salesperson_contact(crm: SandboxCrm, **properties: str) -> str:
    """A contact made in HubSpot's UI (no request counted); its id."""
    reply = crm.state.api.create_one({"properties": properties})
    assert reply.status == 201
    assert reply.body is not None
    return str(reply.body["id"])


def stored(crm: SandboxCrm, crm_id: str | None) -> dict[str, str]:
    """The live sandbox contact's properties."""
    assert crm_id is not None
    return crm.state.store.live[crm_id].properties


def _refusals(lead_id: int) -> list[HubSpotError]:
    """The CONFLICTs HubSpot may give a contact: its Cauce id taken, its email taken."""
    return [
        HubSpotError("CONFLICT", f"A contact with cauce_id {uid(lead_id)} already exists."),
        HubSpotError("CONFLICT", "Contact already exists. Existing ID: 1234"),
    ]


@given(
    st.lists(st.booleans(), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1)), max_size=30),
)
def test_no_contact_switches_key_twice_in_a_call(
    synced_flags: list[bool], refusals: list[tuple[int, int]]
) -> None:
    """Whatever refusals come in whatever order, each contact changes key at most once,
    and a synced lead starts on its Cauce id, a new one on its email."""
    batch = [
        replace(contact(i, f"p{i}@empresa.es"), crm_id=str(900 + i) if was else None)
        for i, was in enumerate(synced_flags)
    ]
    keys = UpsertKeys(batch, "cauce_id")
    assert [k.key.property for k in keys.sent] == [
        "cauce_id" if was else "email" for was in synced_flags
    ]
    switches = [0] * len(batch)
    for position, kind in refusals:
        if position < len(batch) and keys.switch(position, _refusals(position)[kind]):
            switches[position] += 1
    assert max(switches) <= 1
    assert keys.switched == {p for p, n in enumerate(switches) if n}


async def test_a_phone_only_lead_given_an_email_is_one_request(make_hubspot: MakeHubSpot) -> None:
    """Synced by its Cauce id without email, then given one: one request, no 409, and its
    one contact has the email (before: three requests and a 409)."""
    hubspot, crm = await make_hubspot()
    (first,) = await hubspot.upsert([contact(7, phone="+34612000007")])
    before = seen(crm)
    (again,) = await hubspot.upsert([synced(contact(7, "nuevo@empresa.es"), first.crm_id)])
    assert since(crm, before) == Sent(upserts=1, conflicts=0, partial=0)
    assert again.ok
    assert again.crm_id == first.crm_id
    assert stored(crm, first.crm_id)["email"] == "nuevo@empresa.es"
    assert crm.state.snapshot()["contacts"] == 1


async def test_an_email_change_of_a_synced_lead_is_one_request(make_hubspot: MakeHubSpot) -> None:
    """A PATCHed email updates the lead's own contact in one request; the old address is
    left on no contact."""
    hubspot, crm = await make_hubspot()
    (first,) = await hubspot.upsert([contact(3, "antes@empresa.es")])
    before = seen(crm)
    (again,) = await hubspot.upsert([synced(contact(3, "despues@empresa.es"), first.crm_id)])
    assert since(crm, before) == Sent(upserts=1, conflicts=0, partial=0)
    assert again.crm_id == first.crm_id
    assert stored(crm, first.crm_id)["email"] == "despues@empresa.es"
    assert crm.state.store.find("email", "antes@empresa.es") is None
    assert crm.state.snapshot()["contacts"] == 1


async def test_an_email_given_to_an_unmapped_email_still_reaches_the_contact(
    make_hubspot: MakeHubSpot,
) -> None:
    """With the email not mapped to a property (the key alone carries it), a synced lead
    sent by its Cauce id still gives its contact the email."""
    hubspot, crm = await make_hubspot()
    (first,) = await hubspot.upsert([contact(4, phone="+34612000004")])
    keyed = contact(4, "solo-clave@empresa.es")
    unmapped = {k: v for k, v in keyed.properties.items() if k != "email"}
    (again,) = await hubspot.upsert([replace(keyed, properties=unmapped, crm_id=first.crm_id)])
    assert again.crm_id == first.crm_id
    assert stored(crm, first.crm_id)["email"] == "solo-clave@empresa.es"


async def test_a_never_synced_lead_adopts_the_salespersons_contact(
    make_hubspot: MakeHubSpot,
) -> None:
    """A lead never synced is keyed by its email: the contact a salesperson made with it
    is updated and gets the Cauce id, in one request."""
    hubspot, crm = await make_hubspot()
    made = salesperson_contact(crm, email="compras@cliente.es", firstname="Lucía")
    before = seen(crm)
    (outcome,) = await hubspot.upsert([contact(5, "Compras@Cliente.es", lastname="Pérez")])
    assert since(crm, before) == Sent(upserts=1, conflicts=0, partial=0)
    assert outcome.crm_id == made
    assert stored(crm, made)["cauce_id"] == uid(5)
    assert crm.state.snapshot()["contacts"] == 1


async def test_a_synced_lead_whose_contact_was_deleted_adopts_the_one_with_its_email(
    make_hubspot: MakeHubSpot,
) -> None:
    """Its contact deleted in HubSpot behind Cauce's back and its address on another
    contact: sent by its Cauce id, HubSpot refuses that one input (the email is taken);
    sent once more by its email, it adopts that contact. The others of the batch are
    synced by the first request."""
    hubspot, crm = await make_hubspot()
    first = await hubspot.upsert([contact(i, f"p{i}@empresa.es") for i in range(4)])
    with crm.state.store.atomic():
        assert crm.state.store.archive(str(first[2].crm_id))
    made = salesperson_contact(crm, email="p2@empresa.es", firstname="Reimportada")
    before = seen(crm)
    batch = [synced(contact(i, f"p{i}@empresa.es"), o.crm_id) for i, o in enumerate(first)]
    outcomes = await hubspot.upsert(batch)
    assert since(crm, before) == Sent(upserts=2, conflicts=0, partial=1)
    assert [o.ok for o in outcomes] == [True] * 4
    assert outcomes[2].crm_id == made
    assert stored(crm, made)["cauce_id"] == uid(2)
    assert [o.crm_id for o in outcomes[:2]] == [o.crm_id for o in first[:2]]
    assert crm.state.snapshot()["contacts"] == 4
    assert crm.state.snapshot()["duplicate_count"] == 0


async def test_a_contact_older_than_the_cauce_id_property_is_adopted_once(
    make_hubspot: MakeHubSpot,
) -> None:
    """A synced lead whose contact lacks the Cauce id (made before the property) falls
    back to its email once; from then on its Cauce id finds it in one request."""
    hubspot, crm = await make_hubspot()
    own = salesperson_contact(crm, email="antigua@empresa.es")
    lead = synced(contact(6, "antigua@empresa.es", firstname="Eva"), own)
    before = seen(crm)
    (outcome,) = await hubspot.upsert([lead])
    assert since(crm, before) == Sent(upserts=2, conflicts=0, partial=1)
    assert outcome.crm_id == own
    assert stored(crm, own)["cauce_id"] == uid(6)
    before = seen(crm)
    (outcome,) = await hubspot.upsert([lead])
    assert since(crm, before) == Sent(upserts=1, conflicts=0, partial=0)
    assert outcome.crm_id == own


async def test_a_synced_lead_moving_to_another_contacts_email_switches_key_once(
    make_hubspot: MakeHubSpot,
) -> None:
    """Its own contact still there and its new email on another contact: the fallback by
    email meets the Cauce id taken and stops there (two requests, no third key), the
    lead failed for good and both contacts unchanged."""
    hubspot, crm = await make_hubspot()
    (first,) = await hubspot.upsert([contact(8, "mia@empresa.es")])
    other = salesperson_contact(crm, email="ajena@empresa.es")
    before = seen(crm)
    (outcome,) = await hubspot.upsert([synced(contact(8, "ajena@empresa.es"), first.crm_id)])
    assert since(crm, before) == Sent(upserts=2, conflicts=1, partial=1)
    assert not outcome.ok
    assert not outcome.retryable
    assert outcome.error is not None
    assert outcome.error.startswith("CONFLICT")
    assert stored(crm, first.crm_id)["email"] == "mia@empresa.es"
    assert "cauce_id" not in stored(crm, other)


async def test_a_never_synced_lead_clashing_with_its_own_contact_is_rekeyed_once(
    make_hubspot: MakeHubSpot,
) -> None:
    """The existing fallback, for a lead whose earlier sync Cauce never heard back from:
    keyed by a new email, its own Cauce id is taken (409), so it is sent by the Cauce id,
    which updates its contact (three requests, as before: the others go in between)."""
    hubspot, crm = await make_hubspot()
    (first,) = await hubspot.upsert([contact(7, phone="+34612000007")])
    others = [contact(i, f"otro{i}@empresa.es") for i in range(3)]
    before = seen(crm)
    outcomes = await hubspot.upsert([*others, contact(7, "nuevo@empresa.es")])
    assert since(crm, before) == Sent(upserts=3, conflicts=1, partial=0)
    assert all(o.ok for o in outcomes)
    assert outcomes[3].crm_id == first.crm_id
    assert stored(crm, first.crm_id)["email"] == "nuevo@empresa.es"


async def test_a_never_synced_lead_does_not_switch_back_to_its_email(
    make_hubspot: MakeHubSpot,
) -> None:
    """Keyed by an email another contact has while its own Cauce id is on a third one:
    switched to the Cauce id once, refused there for the email, and left failed: no
    switch back (two requests)."""
    hubspot, crm = await make_hubspot()
    (first,) = await hubspot.upsert([contact(9, "vieja@empresa.es")])
    other = salesperson_contact(crm, email="compartida@empresa.es")
    before = seen(crm)
    (outcome,) = await hubspot.upsert([contact(9, "compartida@empresa.es")])
    assert since(crm, before) == Sent(upserts=2, conflicts=1, partial=1)
    assert not outcome.ok
    assert stored(crm, first.crm_id)["email"] == "vieja@empresa.es"
    assert "cauce_id" not in stored(crm, other)


async def test_requests_per_batch_by_kind_of_lead(make_hubspot: MakeHubSpot) -> None:
    """100 synced leads: one request, even when a quarter of them gained or changed an
    email; 100 new ones: one; half and half: two (one per key property). No 409."""
    hubspot, crm = await make_hubspot()
    created = await hubspot.upsert(
        [contact(i, f"v{i}@empresa.es") if i % 4 else contact(i) for i in range(100)]
    )
    assert all(o.ok for o in created)
    before = seen(crm)
    updated = await hubspot.upsert(
        [synced(contact(i, f"w{i}@empresa.es"), o.crm_id) for i, o in enumerate(created)]
    )
    assert since(crm, before) == Sent(upserts=1, conflicts=0, partial=0)
    assert [o.crm_id for o in updated] == [o.crm_id for o in created]

    before = seen(crm)
    fresh = await hubspot.upsert([contact(i, f"n{i}@empresa.es") for i in range(100, 200)])
    assert all(o.ok for o in fresh)
    assert since(crm, before) == Sent(upserts=1, conflicts=0, partial=0)

    before = seen(crm)
    mixed = [synced(contact(i, f"x{i}@empresa.es"), created[i].crm_id) for i in range(50)]
    mixed += [contact(i, f"m{i}@empresa.es") for i in range(200, 250)]
    outcomes = await hubspot.upsert(mixed)
    assert all(o.ok for o in outcomes)
    assert since(crm, before) == Sent(upserts=2, conflicts=0, partial=0)
    assert crm.state.snapshot()["contacts"] == 250
    assert crm.state.snapshot()["duplicate_count"] == 0


async def test_a_synced_lead_and_a_new_one_with_its_old_email_keep_their_contacts(
    make_hubspot: MakeHubSpot,
) -> None:
    """The email hand-over in one batch: the synced lead moves off an address another lead
    now gets. Updates by Cauce id go first, so the new lead's email key does not find
    (and take) the first lead's contact: it gets a contact of its own."""
    hubspot, crm = await make_hubspot()
    (first,) = await hubspot.upsert([contact(1, "buzon@empresa.es")])
    outcomes = await hubspot.upsert(
        [contact(2, "buzon@empresa.es"), synced(contact(1, "propio@empresa.es"), first.crm_id)]
    )
    assert all(o.ok for o in outcomes)
    assert outcomes[1].crm_id == first.crm_id
    assert outcomes[0].crm_id != first.crm_id
    assert stored(crm, first.crm_id)["cauce_id"] == uid(1)
    assert stored(crm, outcomes[0].crm_id)["cauce_id"] == uid(2)


@pytest.fixture
async def sandbox(start_sandbox: StartSandbox) -> SandboxCrm:
    """A sandbox HubSpot without faults."""
    return await start_sandbox()


async def test_delivery_sends_phone_only_leads_given_an_email_in_one_request(
    db: Database,
    crm_settings: Settings,
    sandbox: SandboxCrm,
    make_clients: MakeClients,
    wall: WallClock,
) -> None:
    """End to end: leads delivered by phone alone, then edited to have an email, are
    delivered again in one request with no 409, each to its own contact."""
    async with unit_of_work(db.sessionmaker) as session:
        session.add_all(
            Lead(uid=str(uuid.uuid4()), phone=f"+346120{i:05d}", source="form") for i in range(30)
        )
    crm = build_crm(crm_settings, make_clients(), clock=wall)
    assert crm is not None
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    async with unit_of_work(db.sessionmaker) as session:
        for lead in (await session.scalars(select(Lead))).all():
            email = f"tel{lead.id}@empresa.es"
            await session.execute(
                update(Lead)
                .where(Lead.id == lead.id)
                .values(
                    email=email, email_key=email, version=Lead.version + 1, sync_status="pending"
                )
            )
    before = seen(sandbox)
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert since(sandbox, before) == Sent(upserts=1, conflicts=0, partial=0)
    async with db.sessionmaker() as session:
        leads = (await session.scalars(select(Lead))).all()
    assert {lead.sync_status for lead in leads} == {"synced"}
    assert sandbox.state.snapshot()["contacts"] == 30
    for lead in leads:
        assert stored(sandbox, lead.crm_id)["email"] == lead.email

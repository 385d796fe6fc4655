"""A lead synced to Pipedrive before is updated by the person id its last sync recorded
(`CrmContact.crm_id`), not found again by a search.

Pipedrive has no upsert: the adapter searches, then creates or updates. Its search is an
index that lags the writes by seconds, so a second sync of a lead soon after the first,
in another worker or after a restart (an empty cache), found nobody and created a second
person for the lead (a duplicate in the CRM, which Cauce promises never to make). Each
later sync of a known person also cost a search, the request Pipedrive's daily budget
charges most for.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cauce.core.db import Database
from cauce.core.http import HttpClients
from cauce.leads.delivery import deliver
from tests.leads.adapters.conftest import MakeClients, ManualClock
from tests.leads.adapters.fake_pipedrive import FakePipedrive, serve
from tests.leads.adapters.test_pipedrive import MakePipedrive, fresh, lead, make_pipedrive
from tests.leads.test_crm_clears import (
    PD_CAUCE_ID,
    PD_CITY,
    PD_NOTES,
    _edit,
    _pipedrive,
    _store,
    clients,
    db,
    pipedrive_settings,
)

__all__ = ["clients", "db", "make_pipedrive"]  # fixtures, shared

SEARCH = ("GET", "/api/v2/persons/search")


def _searches(fake: FakePipedrive) -> int:
    return sum(1 for request in fake.requests if request == SEARCH)


async def test_a_synced_lead_is_updated_by_its_id_before_the_search_index_has_it(
    make_pipedrive: MakePipedrive, make_clients: MakeClients
) -> None:
    """Created by one worker, updated a second later by another: one person, updated by
    its id, with no search (before: a second person)."""
    adapter, fake = await make_pipedrive(search_lag=5.0)
    (created,) = await adapter.upsert([lead(1, "ana@empresa.es", firstname="Ana")])
    assert created.crm_id is not None
    searches = _searches(fake)

    other_worker = fresh(adapter, fake, make_clients)
    again = replace(lead(1, "ana@empresa.es", firstname="Ana María"), crm_id=created.crm_id)
    (updated,) = await other_worker.upsert([again])

    assert updated.crm_id == created.crm_id
    (person,) = fake.persons.values()
    assert person["name"] == "Ana María"
    assert _searches(fake) == searches  # read by its id, not searched


async def test_the_person_kept_is_the_one_synced_whoever_else_has_the_email(
    make_pipedrive: MakePipedrive, make_clients: MakeClients
) -> None:
    """Pipedrive keeps no email unique: a colleague's older person on the same mailbox
    is left alone, the lead's own person updated."""
    adapter, fake = await make_pipedrive()
    reception = fake.add_person("Recepción", "info@empresa.es")
    (ours,) = await adapter.upsert([lead(2, phone="+34612000002")])
    crm_id = ours.crm_id
    assert crm_id is not None
    assert crm_id != str(reception)
    contact = replace(lead(2, "info@empresa.es", firstname="Marta"), crm_id=crm_id)
    (updated,) = await fresh(adapter, fake, make_clients).upsert([contact])
    assert updated.crm_id == crm_id
    assert fake.persons[reception]["name"] == "Recepción"
    assert fake.persons[int(crm_id)]["name"] == "Marta"


async def test_a_person_gone_or_holding_another_lead_is_searched_for_instead(
    make_pipedrive: MakePipedrive, make_clients: MakeClients, sandbox_clock: ManualClock
) -> None:
    """Deleted in Pipedrive (404), or its Cauce id field names another lead (the id was
    reused by a merge there): the lead is found by the search, or created, as if never
    synced."""
    adapter, fake = await make_pipedrive()
    (created,) = await adapter.upsert([lead(1, "ana@empresa.es", firstname="Ana")])
    gone = replace(lead(1, "ana@empresa.es", firstname="Ana"), crm_id="999")
    (found,) = await fresh(adapter, fake, make_clients).upsert([gone])
    assert found.crm_id == created.crm_id
    assert len(fake.persons) == 1

    (luis,) = await adapter.upsert([lead(3, "luis@empresa.es", firstname="Luis")])
    assert luis.crm_id is not None
    sandbox_clock.advance(10)
    wrong = replace(lead(1, "ana@empresa.es", firstname="Ana Isabel"), crm_id=luis.crm_id)
    (mended,) = await fresh(adapter, fake, make_clients).upsert([wrong])
    assert mended.crm_id == created.crm_id
    assert fake.persons[int(luis.crm_id)]["name"] == "Luis"
    assert fake.persons[int(created.crm_id or 0)]["name"] == "Ana Isabel"


async def test_two_workers_syncing_a_lead_in_turn_keep_one_person(
    db: Database, tmp_path: Path, clients: HttpClients
) -> None:
    """Through `deliver`: the lead's first sync (one worker) records the person id; its
    next (another worker, seconds later, the search index behind) updates that person
    (before: a second person for the lead)."""
    fake = FakePipedrive(
        clock=ManualClock(),
        custom_fields=frozenset({PD_CAUCE_ID, PD_CITY, PD_NOTES}),
        search_lag=30.0,
    )
    runner = await serve(fake)
    try:
        settings = pipedrive_settings(tmp_path)
        lead_id = await _store(db, email="ana@bodegas.es", first_name="Ana", city="Sevilla")
        assert (await deliver(db.sessionmaker, _pipedrive(clients, fake.url), settings)).synced
        await _edit(db, lead_id, city="Cádiz")
        other_worker = _pipedrive(clients, fake.url)
        assert (await deliver(db.sessionmaker, other_worker, settings)).synced == 1
        (person,) = fake.persons.values()
        assert person["custom_fields"][PD_CITY] == "Cádiz"
    finally:
        await runner.cleanup()


async def test_a_warm_worker_updates_a_synced_lead_in_one_request(
    make_pipedrive: MakePipedrive,
) -> None:
    """The person this process wrote last is in its cache: an update is one PATCH, as
    before the id was carried (helper-132's review: it was a GET and a PATCH)."""
    adapter, fake = await make_pipedrive()
    (created,) = await adapter.upsert([lead(1, "ana@empresa.es", firstname="Ana")])
    before = len(fake.requests)
    for name in ("Ana María", "Ana Isabel"):
        contact = replace(lead(1, "ana@empresa.es", firstname=name), crm_id=created.crm_id)
        (updated,) = await adapter.upsert([contact])
        assert updated.crm_id == created.crm_id
    assert fake.requests[before:] == [("PATCH", f"/api/v2/persons/{created.crm_id}")] * 2


async def test_an_id_whose_person_has_no_cauce_id_is_not_trusted(
    make_pipedrive: MakePipedrive, make_clients: MakeClients
) -> None:
    """An id that names a person without this lead's Cauce id (another CRM's id after a
    switch of provider, a person someone else made): that person is left alone, and the
    lead is found by its search, or created."""
    adapter, fake = await make_pipedrive()
    stranger = fake.add_person("Otra Persona", "otra@empresa.es")
    contact = replace(lead(1, "ana@empresa.es", firstname="Ana"), crm_id=str(stranger))
    (created,) = await fresh(adapter, fake, make_clients).upsert([contact])
    assert created.crm_id != str(stranger)
    assert fake.persons[stranger]["name"] == "Otra Persona"
    assert [e["value"] for e in fake.persons[stranger]["emails"]] == ["otra@empresa.es"]

"""A field cleared in Cauce is cleared in the CRM, and only a field Cauce gave a value there.

Before, `contact_properties` left empty values out of the contact sent, so a `PATCH
{"city": null}` left the old city in the CRM while the lead showed `synced`. Sending every
mapped property empty on every sync would instead wipe what salespeople typed in the CRM
for fields Cauce never had. Now `leads.crm_sent_properties` (migration 0016) holds the
properties the last successful sync gave a value; one whose field is empty now is sent
as a clear, in each vendor's words (HubSpot `""`, Pipedrive `null`, the webhook `null`).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from alembic import command
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import Connection, inspect, select, text, update

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.config import DEFAULT_CRM_FIELDS, CrmSettings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.db.migrate import alembic_config, upgrade
from cauce.core.http import HttpClients
from cauce.core.resilience import FakeClock
from cauce.leads.adapters import PipedriveCrm, build_crm, crm_client_options
from cauce.leads.adapters.hubspot_batch import upsert_inputs
from cauce.leads.adapters.pipedrive import _Person
from cauce.leads.delivery import _record_batch, deliver, sent_properties, to_contact
from cauce.leads.models import Lead
from cauce.leads.ports import (
    CrmContact,
    CrmKey,
    CrmRejected,
    CrmUnavailable,
    UpsertOutcome,
)
from cauce.sandbox import SandboxCrm, SandboxCrmConfig, start_sandbox_crm
from tests.conftest import SettingsFactory, make_settings
from tests.leads.adapters.conftest import ManualClock, WallClock, fast_policy
from tests.leads.adapters.fake_pipedrive import FakePipedrive, serve
from tests.leads.adapters.test_webhook import make_webhook, webhook_settings
from tests.leads.stored_rows import insert_stored_lead
from tests.leads.test_delivery import MemoryCrm

UID = "00000000-0000-4000-8000-000000000007"
# Pipedrive names custom fields by 40-character hashes.
PD_CAUCE_ID = "a3f1c0de5b7e4e2f9c8d1b2a3c4d5e6f7a8b9c0d"
PD_CITY = "1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
PD_NOTES = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"
PIPEDRIVE_MAPPING = {
    "email": "email",
    "phone": "phone",
    "first_name": "firstname",
    "last_name": "lastname",
    "city": PD_CITY,
    "uid": PD_CAUCE_ID,
}


def _crm_settings(tmp_path: Path, **crm: Any) -> CrmSettings:
    return make_settings(tmp_path, crm={"provider": "hubspot", **crm}).crm


def _lead(**fields: Any) -> Lead:
    """A lead row as delivery reads it (not stored)."""
    values: dict[str, Any] = {
        "id": 7,
        "uid": UID,
        "version": 2,
        "source": "api",
        "score": 40,
        "custom_fields": {},
    }
    values.update(fields)
    return Lead(**values)


async def _drain(app: FastAPI) -> None:
    resources: Resources = app.state.resources
    await job_worker_for(resources).run_until_idle(30)


# --- end to end: the API, the job engine, the HubSpot adapter and the sandbox CRM ---------


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxCrm]:
    """A HubSpot-compatible sandbox on 127.0.0.1 with Cauce's custom properties."""
    crm = await start_sandbox_crm(SandboxCrmConfig(seed=1))
    yield crm
    await crm.stop()


@pytest.fixture
async def app_on_sandbox(
    settings_factory: SettingsFactory, sandbox: SandboxCrm
) -> AsyncIterator[FastAPI]:
    """The app delivering to the sandbox through its own HubSpot adapter (a custom field
    `sector` mapped to HubSpot's `industry`), jobs run by hand."""
    settings = settings_factory(
        crm={
            "provider": "hubspot",
            "token": sandbox.token,
            "base_url": sandbox.url,
            "field_mapping": {**DEFAULT_CRM_FIELDS, "custom.sector": "industry"},
        },
        jobs={"embedded_worker": False},
    )
    app = create_app(settings)
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def api_on_sandbox(app_on_sandbox: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app_on_sandbox` with every leads scope."""
    resources: Resources = app_on_sandbox.state.resources
    key = await resources.api_keys.create("t", ["leads:read", "leads:write", "leads:admin"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_on_sandbox),
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    ) as client:
        yield client


@pytest.fixture
async def hubspot(sandbox: SandboxCrm) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the sandbox's HubSpot API (with the token) and its `/_sandbox` routes."""
    async with httpx.AsyncClient(
        base_url=sandbox.url, headers={"Authorization": f"Bearer {sandbox.token}"}
    ) as client:
        yield client


READ = ["city", "industry", "phone", "jobtitle", "company", "firstname", "email", "cauce_id"]


async def _contact(hubspot: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """The contact's properties, read back through HubSpot's single-contact GET."""
    response = await hubspot.get(
        f"/crm/v3/objects/contacts/{email}",
        params={"idProperty": "email", "properties": ",".join(READ)},
    )
    assert response.status_code == 200, response.text
    properties: dict[str, Any] = response.json()["properties"]
    return properties


async def test_a_cleared_field_is_cleared_in_the_crm_and_a_crm_only_value_stays(
    app_on_sandbox: FastAPI, api_on_sandbox: httpx.AsyncClient, hubspot: httpx.AsyncClient
) -> None:
    """Create a lead with a city and a sector, sync; a salesperson types a phone and a job
    title in the CRM (Cauce has neither); `PATCH {"city": null, sector: null}` and sync:
    the contact's city and industry are gone, the phone and job title stay, the lead is
    `synced`. A city typed in the CRM afterwards survives the next sync too."""
    email = f"ana.{uuid.uuid4().hex[:6]}@bodegas-ruiz.es"
    created = await api_on_sandbox.post(
        "/v1/leads",
        json={
            "email": email,
            "first_name": "Ana",
            "last_name": "Ruiz",
            "company": "Bodegas Ruiz",
            "city": "Sevilla",
            "custom_fields": {"sector": "vino"},
        },
    )
    assert created.status_code == 201, created.text
    lead_id = created.json()["id"]
    await _drain(app_on_sandbox)
    before = await _contact(hubspot, email)
    assert (before["city"], before["industry"], before["phone"]) == ("Sevilla", "vino", None)

    typed = {"phone": "+34954000000", "jobtitle": "Gerente"}
    ui = await hubspot.patch(
        f"/_sandbox/contacts/{email}", params={"idProperty": "email"}, json={"properties": typed}
    )
    assert ui.status_code == 200, ui.text

    patched = await api_on_sandbox.patch(
        f"/v1/leads/{lead_id}", json={"city": None, "custom_fields": {"sector": None}}
    )
    assert patched.status_code == 200, patched.text
    await _drain(app_on_sandbox)
    detail = (await api_on_sandbox.get(f"/v1/leads/{lead_id}")).json()
    assert detail["sync"]["status"] == "synced"
    after = await _contact(hubspot, email)
    assert not after["city"], "the city cleared in Cauce is still in the CRM"
    assert not after["industry"]
    assert (after["phone"], after["jobtitle"]) == ("+34954000000", "Gerente")
    assert (after["company"], after["firstname"], after["email"]) == ("Bodegas Ruiz", "Ana", email)

    # The clear is remembered: the city is no longer Cauce's, so a city a salesperson
    # types now is not cleared by the next change Cauce sends.
    ui = await hubspot.patch(
        f"/_sandbox/contacts/{email}",
        params={"idProperty": "email"},
        json={"properties": {"city": "Cádiz"}},
    )
    assert ui.status_code == 200, ui.text
    patched = await api_on_sandbox.patch(f"/v1/leads/{lead_id}", json={"company": "Ruiz SL"})
    assert patched.status_code == 200, patched.text
    await _drain(app_on_sandbox)
    last = await _contact(hubspot, email)
    assert (last["city"], last["company"], last["phone"]) == ("Cádiz", "Ruiz SL", "+34954000000")


# --- what delivery sends and records -------------------------------------------------------


def test_only_a_property_sent_before_is_cleared(tmp_path: Path) -> None:
    """A property the last sync gave a value whose field is empty now goes as None (a
    clear); one never sent (`phone`) or no longer mapped stays out."""
    settings = _crm_settings(tmp_path)
    lead = _lead(
        email="ana@bodegas.es",
        first_name="Ana",
        crm_sent_properties=["cauce_id", "cauce_score", "city", "email", "firstname", "zip"],
    )
    contact = to_contact(lead, settings)
    assert contact.properties == {
        "email": "ana@bodegas.es",
        "firstname": "Ana",
        "cauce_score": 40,
        "cauce_id": UID,
        "city": None,
    }
    assert sent_properties(lead, contact, settings) == [
        "cauce_id",
        "cauce_score",
        "email",
        "firstname",
    ]


def test_a_lead_synced_before_migration_0016_clears_nothing(tmp_path: Path) -> None:
    """Without a record of what was sent (null), nothing is cleared: a guess could wipe
    what a salesperson typed."""
    contact = to_contact(
        _lead(email="ana@bodegas.es", crm_sent_properties=None), _crm_settings(tmp_path)
    )
    assert None not in contact.properties.values()


def test_a_team_mailbox_email_withheld_is_no_clear(tmp_path: Path) -> None:
    """The second lead on `info@` is keyed by its Cauce id and sent without the email,
    which is not cleared (another lead's contact holds it); the record keeps `email`, so
    emptying this lead's email later clears it where an earlier sync put it."""
    settings = _crm_settings(tmp_path)
    sent = ["cauce_id", "cauce_score", "city", "email", "firstname"]
    lead = _lead(email="info@bodegas.es", first_name="Luis", city="Jerez", crm_sent_properties=sent)
    held = to_contact(lead, settings, email_held=True)
    assert held.key == CrmKey("cauce_id", UID)
    assert "email" not in held.properties
    assert None not in held.properties.values()
    assert "email" in sent_properties(lead, held, settings, email_held=True)
    never = _lead(email="info@bodegas.es", first_name="Luis", crm_sent_properties=["cauce_id"])
    assert "email" not in sent_properties(
        never, to_contact(never, settings, email_held=True), settings, email_held=True
    )

    emptied = _lead(
        email=None, phone="+34612345678", first_name="Luis", city="Jerez", crm_sent_properties=sent
    )
    contact = to_contact(emptied, settings)
    assert contact.key == CrmKey("cauce_id", UID)
    assert contact.properties["email"] is None


@pytest.fixture
async def db(settings_factory: SettingsFactory) -> AsyncIterator[Database]:
    """This test's database (both backends)."""
    database = create_database(settings_factory())
    yield database
    await database.dispose()


async def _store(db: Database, **fields: Any) -> int:
    async with unit_of_work(db.sessionmaker) as session:
        # As intake stores it: `email_key` is the address lower-cased.
        email_key = fields["email"].lower() if fields.get("email") else None
        lead = Lead(uid=str(uuid.uuid4()), source="api", email_key=email_key, **fields)
        session.add(lead)
        await session.flush()
        return lead.id


async def _sent(db: Database, lead_id: int) -> list[str] | None:
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        return lead.crm_sent_properties


async def _edit(db: Database, lead_id: int, **values: Any) -> None:
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(
            update(Lead)
            .where(Lead.id == lead_id)
            .values(**values, version=Lead.version + 1, sync_status="pending")
        )


async def _city_cleared(db: Database, lead_id: int, crm: MemoryCrm, settings: CrmSettings) -> None:
    """Empty the lead's city and sync: the city goes as a clear and leaves the record."""
    await _edit(db, lead_id, city=None)
    await deliver(db.sessionmaker, crm, settings)
    assert crm.batches[-1][0].properties["city"] is None
    assert "city" not in (await _sent(db, lead_id) or [])


async def test_the_record_follows_each_success_and_a_clear_goes_once(
    db: Database, tmp_path: Path
) -> None:
    """The sync that marks a lead synced records what it gave a value; the next sync
    after a clear sends it as None and records it gone, so the one after says nothing."""
    settings = _crm_settings(tmp_path)
    lead_id = await _store(db, email="ana@bodegas.es", city="Sevilla")
    crm = MemoryCrm()
    await deliver(db.sessionmaker, crm, settings)
    assert "city" in (await _sent(db, lead_id) or [])
    await _city_cleared(db, lead_id, crm, settings)
    await _edit(db, lead_id, company="Bodegas")
    await deliver(db.sessionmaker, crm, settings)
    assert "city" not in crm.batches[-1][0].properties


async def test_a_failed_sync_records_nothing(db: Database, tmp_path: Path) -> None:
    """A contact the CRM refused did not reach it: the record stays as it was, and the
    clear is sent again with the next attempt."""
    settings = _crm_settings(tmp_path)
    lead_id = await _store(db, email="ana@bodegas.es", city="Sevilla")
    crm = MemoryCrm()
    await deliver(db.sessionmaker, crm, settings)
    recorded = await _sent(db, lead_id)
    await _edit(db, lead_id, city=None)
    crm.flaky.add("ana@bodegas.es")
    await deliver(db.sessionmaker, crm, settings)
    assert await _sent(db, lead_id) == recorded
    await deliver(db.sessionmaker, crm, settings)
    assert crm.batches[-1][0].properties["city"] is None
    assert "city" not in (await _sent(db, lead_id) or [])


async def test_an_older_state_never_overwrites_a_newer_record(db: Database, tmp_path: Path) -> None:
    """The record is written by the version's compare-and-set: an answer about version 2
    written after version 3's leaves version 3's record (and synced version)."""
    lead_id = await _store(db, email="ana@bodegas.es", version=3)
    key = CrmKey("email", "ana@bodegas.es")
    newer = CrmContact(lead_id, 3, key, {"email": "ana@bodegas.es", "city": "Cádiz"})
    older = CrmContact(lead_id, 2, key, {"email": "ana@bodegas.es", "city": None})
    async with unit_of_work(db.sessionmaker) as session:
        verdicts = await _record_batch(
            session, [newer], [UpsertOutcome(lead_id, crm_id="1")], {lead_id: ["city", "email"]}
        )
    assert verdicts == [(newer, "synced")]
    async with unit_of_work(db.sessionmaker) as session:
        verdicts = await _record_batch(
            session, [older], [UpsertOutcome(lead_id, crm_id="1")], {lead_id: ["email"]}
        )
    assert verdicts == [(older, "superseded")]
    async with db.sessionmaker() as session:
        row = (
            await session.execute(
                select(Lead.synced_version, Lead.crm_sent_properties).where(Lead.id == lead_id)
            )
        ).one()
    assert tuple(row) == (3, ["city", "email"])


async def test_an_edit_during_the_call_keeps_the_record_of_what_was_sent(
    db: Database, tmp_path: Path
) -> None:
    """A clear in flight while the city is typed again in Cauce: the clear's record is
    written (the CRM took it), the lead stays pending, and the new city goes next and is
    recorded."""
    settings = _crm_settings(tmp_path)
    lead_id = await _store(db, email="ana@bodegas.es", city="Sevilla")
    crm = MemoryCrm()
    await deliver(db.sessionmaker, crm, settings)
    await _edit(db, lead_id, city=None)
    edited = False

    async def type_a_city() -> None:
        nonlocal edited
        if not edited:
            edited = True
            await _edit(db, lead_id, city="Bilbao")

    crm.on_call.append(type_a_city)
    report = await deliver(db.sessionmaker, crm, settings)
    assert (report.superseded, report.synced) == (1, 1)
    assert [batch[0].properties["city"] for batch in crm.batches[-2:]] == [None, "Bilbao"]
    assert "city" in (await _sent(db, lead_id) or [])


async def test_a_team_mailbox_shared_by_two_leads_loses_nothing_in_the_sandbox(
    db: Database, tmp_path: Path, sandbox: SandboxCrm, clients: HttpClients
) -> None:
    """Two colleagues on `info@`: the second's contact is keyed by its Cauce id and never
    gets (nor loses) the email; clearing its city clears that contact's city alone, and
    the first colleague's contact keeps the email and its city."""
    settings = make_settings(
        tmp_path, crm={"provider": "hubspot", "token": sandbox.token, "base_url": sandbox.url}
    )
    crm = build_crm(settings, clients)
    assert crm is not None
    shared = "info@bodegas-ruiz.es"
    first = await _store(db, email=shared, first_name="Carmen", city="Jerez")
    second = await _store(db, email=shared, first_name="Luis", city="Jerez")
    await deliver(db.sessionmaker, crm, settings.crm)
    await _edit(db, second, city=None)
    report = await deliver(db.sessionmaker, crm, settings.crm)
    assert report.synced == 1
    store = sandbox.state.store
    async with db.sessionmaker() as session:
        uids = {lead.id: lead.uid for lead in (await session.scalars(select(Lead))).all()}
    carmen, luis = store.find("cauce_id", uids[first]), store.find("cauce_id", uids[second])
    assert carmen is not None
    assert luis is not None
    assert (carmen.properties["email"], carmen.properties["city"]) == (shared, "Jerez")
    assert "email" not in luis.properties
    assert "city" not in luis.properties
    assert luis.properties["firstname"] == "Luis"


async def test_a_value_the_crm_took_from_a_lost_answer_is_cleared_later(
    db: Database, tmp_path: Path, sandbox: SandboxCrm, clients: HttpClients
) -> None:
    """HubSpot applies an upsert and answers 500 (the answer lost, as after a timeout): the
    contact has the city though Cauce never saw a success. The city is then emptied in
    Cauce; the next sync clears it in the CRM (before, it stayed there for good: the
    record said it had never been sent)."""
    settings = make_settings(
        tmp_path, crm={"provider": "hubspot", "token": sandbox.token, "base_url": sandbox.url}
    )
    crm = build_crm(settings, clients)
    assert crm is not None
    lead_id = await _store(db, email="ana@bodegas-ruiz.es", city="Sevilla")
    faults = sandbox.state.faults
    calm = faults.settings
    faults.reconfigure(calm.updated({"error_after_write_rate": 1.0}))
    with pytest.raises(CrmUnavailable):
        await deliver(db.sessionmaker, crm, settings.crm)
    contact = sandbox.state.store.find("email", "ana@bodegas-ruiz.es")
    assert contact is not None
    assert contact.properties["city"] == "Sevilla"
    assert "city" in (await _sent(db, lead_id) or [])
    faults.reconfigure(calm)
    await _edit(db, lead_id, city=None)
    report = await deliver(db.sessionmaker, crm, settings.crm)
    assert report.synced == 1
    contact = sandbox.state.store.find("email", "ana@bodegas-ruiz.es")
    assert contact is not None
    assert not contact.properties.get("city"), "the city the CRM took is still there"


class _Failing(MemoryCrm):
    """A CRM whose next request fails as a whole with `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    async def upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await super().upsert(contacts)


@pytest.mark.parametrize(
    "error",
    [CrmUnavailable("timed out"), CrmUnavailable("circuit open"), CrmRejected("HTTP 403")],
)
async def test_a_failed_request_still_clears_what_it_tried_to_send(
    db: Database, tmp_path: Path, error: Exception
) -> None:
    """Whatever a request's failure (a timeout may have been applied; an open circuit or
    a refusal were not, but no error tells every case apart: a retry's last error hides
    an earlier attempt's), the record keeps what it tried to give a value, and emptying
    that field later sends a clear, once."""
    settings = _crm_settings(tmp_path)
    lead_id = await _store(db, email="ana@bodegas.es", city="Sevilla")
    crm = _Failing(error)
    with pytest.raises(type(error)):
        await deliver(db.sessionmaker, crm, settings)
    assert "city" in (await _sent(db, lead_id) or [])
    await _city_cleared(db, lead_id, crm, settings)


async def test_the_record_grows_before_the_request_leaves(db: Database, tmp_path: Path) -> None:
    """While a request is in flight (it may be cut, or its answer lost), the lead's record
    already holds what it gives a value, kept with what earlier syncs gave."""
    settings = _crm_settings(tmp_path)
    lead_id = await _store(db, email="ana@bodegas.es", city="Sevilla")
    crm = MemoryCrm()
    await deliver(db.sessionmaker, crm, settings)
    await _edit(db, lead_id, city=None, company="Bodegas Ruiz", job_title="Gerente")
    seen: list[list[str] | None] = []

    async def look() -> None:
        seen.append(await _sent(db, lead_id))

    crm.on_call.append(look)
    await deliver(db.sessionmaker, crm, settings)
    assert seen
    assert {"city", "company", "email", "jobtitle"} <= set(seen[0] or [])
    assert "city" not in (await _sent(db, lead_id) or [])  # the success's own record


# --- each adapter's body for a clear --------------------------------------------------------


def test_hubspot_sends_a_clear_as_the_empty_string() -> None:
    """HubSpot reads `""` as no value and ignores `null`: a clear goes as `""`."""
    contact = CrmContact(7, 2, CrmKey("email", "ana@bodegas.es"), {"city": None, "cauce_id": UID})
    (item,) = upsert_inputs([contact])
    assert item["properties"] == {"city": "", "cauce_id": UID}


@pytest.fixture
async def clients() -> AsyncIterator[HttpClients]:
    """Guarded HTTP clients with fast retries and no real waiting."""
    built = HttpClients(default_policy=fast_policy(), clock=FakeClock(), rng=random.Random(7))
    yield built
    await built.close()


def pipedrive_settings(tmp_path: Path) -> CrmSettings:
    """Delivery to Pipedrive with `PIPEDRIVE_MAPPING`, leads keyed by `PD_CAUCE_ID`."""
    crm = {
        "provider": "pipedrive",
        "field_mapping": PIPEDRIVE_MAPPING,
        "cauce_id_property": PD_CAUCE_ID,
    }
    return make_settings(tmp_path, crm=crm).crm


def _pipedrive(clients: HttpClients, url: str = "http://127.0.0.1:9") -> PipedriveCrm:
    return PipedriveCrm(
        clients.get("pipedrive"), token="pd-token", base_url=url, cauce_id_property=PD_CAUCE_ID
    )


def test_pipedrive_body_for_a_clear(clients: HttpClients) -> None:
    """Pipedrive: a custom field and `org_id` as null, `label_ids` as [], `owner_id` left
    alone (a person always has one), a name whose parts are all cleared becomes the
    create's placeholder, and a cleared phone takes the primary one out of the list."""
    adapter = _pipedrive(clients)
    contact = CrmContact(
        7,
        2,
        CrmKey("email", "ana@bodegas.es"),
        {
            "email": "ana@bodegas.es",
            "phone": None,
            "firstname": None,
            PD_CITY: None,
            "org_id": None,
            "label_ids": None,
            "owner_id": None,
            PD_CAUCE_ID: UID,
        },
    )
    current = {
        "phones": [
            {"value": "+34612345678", "primary": True, "label": "work"},
            {"value": "+34954000000", "primary": False, "label": "home"},
        ]
    }
    found = _Person(5, ("ana@bodegas.es",), ("+34612345678", "+34954000000"))
    body = adapter._person_body(contact, found, current)
    assert body == {
        "name": "ana@bodegas.es",
        "phones": [{"value": "+34954000000", "primary": True, "label": "home"}],
        "org_id": None,
        "label_ids": [],
        "custom_fields": {PD_CITY: None, PD_CAUCE_ID: UID},
    }


def test_pipedrive_body_without_clears_is_unchanged(clients: HttpClients) -> None:
    """A contact with nothing to clear is sent as before (no name change, no lists)."""
    adapter = _pipedrive(clients)
    contact = CrmContact(7, 2, CrmKey("email", "ana@bodegas.es"), {PD_CITY: "Sevilla"})
    found = _Person(5, ("ana@bodegas.es",), ())
    assert adapter._person_body(contact, found) == {"custom_fields": {PD_CITY: "Sevilla"}}


async def test_pipedrive_end_to_end_clears_what_cauce_set_and_keeps_the_rest(
    db: Database, tmp_path: Path, clients: HttpClients
) -> None:
    """Against the fake Pipedrive: after city and phone are cleared in Cauce the person's
    city field is null and Cauce's phone is gone, while the phone and the notes field a
    salesperson added stay."""
    fake = FakePipedrive(
        clock=ManualClock(), custom_fields=frozenset({PD_CAUCE_ID, PD_CITY, PD_NOTES})
    )
    runner = await serve(fake)
    try:
        crm = _pipedrive(clients, fake.url)
        settings = pipedrive_settings(tmp_path)
        lead_id = await _store(
            db, email="ana@bodegas.es", phone="+34612345678", first_name="Ana", city="Sevilla"
        )
        await deliver(db.sessionmaker, crm, settings)
        (person,) = fake.persons.values()
        assert person["custom_fields"][PD_CITY] == "Sevilla"
        person["phones"].append({"value": "+34954000000", "primary": False, "label": "home"})
        person["custom_fields"][PD_NOTES] = "llamar por la tarde"
        await _edit(db, lead_id, city=None, phone=None)
        report = await deliver(db.sessionmaker, crm, settings)
        assert report.synced == 1
        (person,) = fake.persons.values()
        assert person["custom_fields"][PD_CITY] is None
        assert person["custom_fields"][PD_NOTES] == "llamar por la tarde"
        assert [p["value"] for p in person["phones"]] == ["+34954000000"]
        assert person["name"] == "Ana"
        assert [e["value"] for e in person["emails"]] == ["ana@bodegas.es"]
    finally:
        await runner.cleanup()


async def test_webhook_carries_a_clear_as_null(tmp_path: Path, wall: WallClock) -> None:
    """The webhook target gets the cleared property as JSON null (an absent property
    says nothing)."""
    bodies: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cauce", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    settings = webhook_settings(tmp_path, f"http://{host}:{port}/cauce")
    clients = HttpClients(
        default_policy=fast_policy(), options=crm_client_options(settings), clock=FakeClock()
    )
    try:
        hook = await make_webhook(settings, lambda **_: clients, wall)
        contact = CrmContact(
            7, 2, CrmKey("email", "ana@bodegas.es"), {"city": None, "cauce_id": UID}
        )
        await hook.upsert([contact])
    finally:
        await clients.close()
        await runner.cleanup()
    (item,) = bodies[0]["data"]["contacts"]
    assert item["properties"] == {"city": None, "cauce_id": UID}


@pytest.fixture
def wall() -> WallClock:
    """The adapters' wall clock."""
    return WallClock()


# --- the sandbox answers a clear as HubSpot does -------------------------------------------


async def test_the_sandbox_clears_on_empty_string_and_ignores_null(
    sandbox: SandboxCrm, hubspot: httpx.AsyncClient
) -> None:
    """`""` removes a property (HubSpot reads it as no value); `null` is answered with
    success and changes nothing, as HubSpot does, so an adapter sending null is caught."""
    email = "ana@bodegas.es"
    upsert = {
        "inputs": [
            {"idProperty": "email", "id": email, "properties": {"city": "Sevilla", "phone": "1"}}
        ]
    }
    assert (
        await hubspot.post("/crm/v3/objects/contacts/batch/upsert", json=upsert)
    ).status_code == 200
    upsert["inputs"][0]["properties"] = {"city": None, "phone": ""}
    assert (
        await hubspot.post("/crm/v3/objects/contacts/batch/upsert", json=upsert)
    ).status_code == 200
    stored = sandbox.state.store.find("email", email)
    assert stored is not None
    assert stored.properties.get("city") == "Sevilla"
    assert "phone" not in stored.properties
    patched = await hubspot.patch(
        f"/crm/v3/objects/contacts/{email}",
        params={"idProperty": "email"},
        json={"properties": {"city": ""}},
    )
    assert patched.status_code == 200
    assert "city" not in stored.properties


# --- the migration -------------------------------------------------------------------------


def _has_column(connection: Connection) -> bool:
    return "crm_sent_properties" in {c["name"] for c in inspect(connection).get_columns("leads")}


def _downgrade_to_0015(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0015")


async def test_migration_0016_adds_the_column_and_its_downgrade_keeps_the_leads(
    empty_database_url: str, tmp_path: Path
) -> None:
    """0016 adds the nullable `crm_sent_properties` (stored leads have none: nothing is
    cleared for them until their next sync); its downgrade drops it and keeps every lead,
    arrival and history line."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    try:
        await upgrade(db, "0015")
        async with db.engine.begin() as conn:
            await insert_stored_lead(conn, city="Sevilla", synced=True)
        await upgrade(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_has_column)
            stored = await conn.execute(text("SELECT crm_sent_properties FROM leads"))
            assert stored.all() == [(None,)]
        async with unit_of_work(db.sessionmaker) as session:  # the ORM writes and reads it
            await session.execute(
                update(Lead).where(Lead.id == 1).values(crm_sent_properties=["city", "email"])
            )
        async with db.sessionmaker() as session:
            assert await session.scalar(select(Lead.crm_sent_properties)) == ["city", "email"]
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0015)
        async with db.engine.connect() as conn:
            assert not await conn.run_sync(_has_column)
            counts = [
                await conn.scalar(text(f"SELECT count(*) FROM {table}"))
                for table in ("leads", "lead_sources", "lead_history")
            ]
        assert counts == [1, 1, 1]
    finally:
        await db.dispose()


async def test_a_new_lead_has_no_record_as_sql_null(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A lead taken in has no record of sent properties yet: SQL NULL, as the migrated
    leads have, not the JSON `null` a query for `IS NULL` would miss."""
    created = await api.post("/v1/leads", json={"email": "nulo@bodegas.es"})
    assert created.status_code == 201, created.text
    async with leads_app.state.resources.db.sessionmaker() as session:
        missing = await session.scalar(
            text("SELECT count(*) FROM leads WHERE crm_sent_properties IS NULL")
        )
    assert missing == 1

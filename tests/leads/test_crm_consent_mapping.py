"""A lead's marketing consent, and its withdrawal, reach the CRM through the field mapping.

A data protection officer's audit found that the CRM never got a lead's consent: the
default `CAUCE_CRM__FIELD_MAPPING` has no consent field, `consent.marketing` or
`consent_marketing` were accepted at start-up and sent nothing, and `consent` sent the
Python text of the whole record ("{'marketing': False, ...}"). Now the mapping takes
`consent_marketing`, `consent_given_at`, `consent_given_on`, `consent_wording_version` and
`consent_source` (`consent.marketing`... as the same), each sent in its CRM's form
(HubSpot: "true"/"false", epoch milliseconds); a withdrawal goes as false, a consent
absent as nothing (unknown, not a no); a key naming no lead field, or a whole object,
stops start-up in one line.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import update

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.config import (
    CRM_MAPPING_KEYS,
    DEFAULT_CRM_FIELDS,
    CrmSettings,
    load_settings,
)
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.errors import ConfigError
from cauce.core.http import HttpClients
from cauce.core.resilience import FakeClock
from cauce.leads.adapters import PipedriveCrm, crm_client_options
from cauce.leads.delivery import contact_properties, deliver, to_contact
from cauce.leads.models import Lead
from cauce.leads.ports import CrmKey
from cauce.sandbox import SandboxCrm, SandboxCrmConfig, start_sandbox_crm
from tests.conftest import SettingsFactory, make_settings
from tests.leads.adapters.conftest import ManualClock, WallClock, fast_policy
from tests.leads.adapters.fake_pipedrive import FakePipedrive, serve
from tests.leads.adapters.test_webhook import make_webhook, webhook_settings
from tests.leads.api_client import client_with
from tests.leads.test_delivery import MemoryCrm
from tests.settings_cli import serve_refusal

UID = "00000000-0000-4000-8000-000000000011"
CONSENT_PROPERTIES = {
    "consent_marketing": "cauce_marketing_consent",
    "consent_given_at": "cauce_consent_given_at",
    "consent_given_on": "cauce_consent_date",
    "consent_wording_version": "cauce_consent_wording",
    "consent_source": "cauce_consent_source",
}
MAPPING = {**DEFAULT_CRM_FIELDS, **CONSENT_PROPERTIES}
GIVEN_AT = "2025-03-10T09:30:15.123000Z"
GIVEN_AT_MS = "1741599015123"  # epoch milliseconds, what a HubSpot datetime takes
GIVEN_ON_MS = "1741564800000"  # 2025-03-10T00:00:00Z: a HubSpot date is midnight UTC
YES = {"marketing": True, "given_at": GIVEN_AT, "wording_version": "rgpd-v3", "source": "web"}
NO = {"marketing": False, "given_at": GIVEN_AT, "wording_version": None, "source": "api"}
# Pipedrive names custom fields by 40-character hashes.
PD_CAUCE_ID = "a3f1c0de5b7e4e2f9c8d1b2a3c4d5e6f7a8b9c0d"
PD_CONSENT = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
PD_CONSENT_AT = "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1"


def _lead(consent: dict[str, Any] | None, **fields: Any) -> Lead:
    """A lead row as delivery reads it (not stored)."""
    values: dict[str, Any] = {
        "id": 11,
        "uid": UID,
        "version": 1,
        "source": "api",
        "email": "ana@bodegas.es",
        "score": 40,
        "custom_fields": {},
        "utm": {},
        "consent": consent,
    }
    values.update(fields)
    return Lead(**values)


def _crm(tmp_path: Path, provider: str = "hubspot", **crm: Any) -> CrmSettings:
    crm.setdefault("field_mapping", MAPPING)
    if provider == "webhook":
        crm.setdefault("base_url", "https://hooks.example.com/cauce")
    return make_settings(tmp_path, crm={"provider": provider, **crm}).crm


def _consent_sent(properties: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in properties.items() if k in CONSENT_PROPERTIES.values()}


# --- the setting: what it may name -----------------------------------------------------------


@pytest.mark.parametrize(
    "mapping",
    [
        DEFAULT_CRM_FIELDS,
        MAPPING,
        # The aliases in the scoring rules' and the CSV mapping's words.
        {"consent.marketing": "m", "consent.given_at": "g", "consent.wording_version": "w"},
        {"consent.source": "s"},
        # What tests and docs map today.
        {**DEFAULT_CRM_FIELDS, "custom.sector": "industry"},
        {"email": "email", "phone": "phone", "first_name": "firstname", "uid": PD_CAUCE_ID},
        {"phone_extension": "ext", "language": "hs_language", "custom_fields.plan": "plan"},
        {"utm.source": "utm_source", "utm.campaign": "utm_campaign", "source": "lead_source"},
        {"status": "s", "team": "t", "score_model": "m", "external_id": "x", "company": "c"},
        {"email_free": "f", "email_disposable": "d", "created_at": "c", "updated_at": "u"},
    ],
)
def test_a_mapping_of_lead_fields_is_accepted(tmp_path: Path, mapping: dict[str, str]) -> None:
    assert _crm(tmp_path, field_mapping=mapping).field_mapping == mapping


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("consent", "consent_marketing"),  # sent as "{'marketing': False, ...}"
        ("utm", "utm.source"),
        ("custom_fields", "custom.<key>"),
        ("custom", "custom.<key>"),
        ("consent.marketng", "names no lead field"),
        ("marketing_consent", "names no lead field"),
        ("consent.given_on", "names no lead field"),
        ("utm.gclid", "names no lead field"),
        ("full_name", "names no lead field"),
        ("crm_id", "names no lead field"),
        ("custom.Sector", "not a custom field name"),
        ("custom.", "not a custom field name"),
    ],
)
def test_a_key_naming_no_lead_field_stops_start_up_in_one_line(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, key: str, hint: str
) -> None:
    """It was accepted and sent nothing (or a Python repr), silently, for every lead."""
    mapping = {"email": "email", key: "cauce_x", "uid": "cauce_id"}
    monkeypatch.setenv("CAUCE_CRM__FIELD_MAPPING", orjson.dumps(mapping).decode())
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("invalid configuration: CAUCE_CRM__FIELD_MAPPING: "), message
    assert "\n" not in message
    assert repr(key) in message
    assert hint in message
    # The keys it takes, once.
    assert message.count("Its keys: uid, email, ") == 1
    assert "consent_marketing, consent_given_at, consent_given_on" in message
    assert "custom.<key>" in message


def test_every_bad_key_is_named_in_the_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        _crm(tmp_path, field_mapping={"consent": "a", "utm": "b", "foo": "c", "email": "email"})
    (error,) = info.value.errors()
    assert all(repr(k) in error["msg"] for k in ("consent", "utm", "foo"))
    assert "'email'" not in error["msg"]


def test_an_empty_property_name_stops_start_up(tmp_path: Path) -> None:
    """A property named "" was refused by the CRM for every lead."""
    with pytest.raises(ValidationError, match=r"'consent_marketing' maps to no CRM property"):
        _crm(tmp_path, field_mapping={"consent_marketing": " "})


def test_the_cli_exits_2_naming_the_setting(tmp_path: Path) -> None:
    """`cauce serve` with `consent` mapped whole: exit 2, one line, no traceback."""
    mapping = '{"email": "email", "consent": "cauce_consent"}'
    line = serve_refusal(tmp_path, CAUCE_CRM__FIELD_MAPPING=mapping)
    assert "CAUCE_CRM__FIELD_MAPPING" in line
    assert "consent_marketing" in line


def test_every_key_the_setting_takes_is_one_delivery_sends() -> None:
    """Core restates what delivery reads (it may not import the leads context): each key
    it takes gives a lead with every field filled a property."""
    lead = _lead(
        YES,
        phone="+34612345678",
        phone_extension="12",
        first_name="Ana",
        last_name="Ruiz",
        company="Bodegas Ruiz",
        job_title="Gerente",
        country="ES",
        region="Andalucía",
        city="Sevilla",
        language="es",
        external_id="crm-7",
        status="new",
        owner="marta",
        team="sur",
        score_model="points",
        email_free=False,
        email_disposable=False,
        other_emails="ana@gmail.com",
        other_phones="+34699000111",
        created_at=datetime(2025, 3, 10, 9, 30, tzinfo=UTC),
        updated_at=datetime(2025, 3, 11, 9, 30, tzinfo=UTC),
        utm={k: f"utm-{k}" for k in ("source", "medium", "campaign", "term", "content")},
    )
    for key in CRM_MAPPING_KEYS:
        assert contact_properties(lead, {key: "p"}, "webhook") != {}, key
    assert contact_properties(lead, {"created_at": "c"}, "hubspot") == {"c": "1741599000000"}


# --- what a lead's consent becomes, per CRM ---------------------------------------------------


def test_hubspot_gets_a_yes_a_no_and_nothing_for_no_consent(tmp_path: Path) -> None:
    """A bool property takes "true"/"false"; a datetime epoch milliseconds; a date
    milliseconds at midnight UTC (HubSpot refuses any other time on a date)."""
    settings = _crm(tmp_path)
    yes = to_contact(_lead(YES), settings).properties
    assert _consent_sent(dict(yes)) == {
        "cauce_marketing_consent": "true",
        "cauce_consent_given_at": GIVEN_AT_MS,
        "cauce_consent_date": GIVEN_ON_MS,
        "cauce_consent_wording": "rgpd-v3",
        "cauce_consent_source": "web",
    }
    no = to_contact(_lead(NO), settings).properties
    assert _consent_sent(dict(no)) == {
        "cauce_marketing_consent": "false",
        "cauce_consent_given_at": GIVEN_AT_MS,
        "cauce_consent_date": GIVEN_ON_MS,
        "cauce_consent_source": "api",
    }
    assert _consent_sent(dict(to_contact(_lead(None), settings).properties)) == {}
    assert not any("{" in str(v) for v in (*yes.values(), *no.values()))


def test_the_dotted_aliases_send_the_same(tmp_path: Path) -> None:
    dotted = {"consent.marketing": "m", "consent.given_at": "g", "consent.source": "s"}
    contact = to_contact(_lead(NO), _crm(tmp_path, field_mapping=dotted))
    assert {k: contact.properties[k] for k in ("m", "g", "s")} == {
        "m": "false",
        "g": GIVEN_AT_MS,
        "s": "api",
    }


def test_pipedrive_gets_text_and_the_webhook_json(tmp_path: Path) -> None:
    """Pipedrive has no boolean field (text "true"/"false"; a date field "YYYY-MM-DD");
    the webhook's receiver gets JSON true/false and ISO 8601 in UTC."""
    pipedrive = _crm(tmp_path, "pipedrive")
    assert _consent_sent(dict(to_contact(_lead(NO), pipedrive).properties)) == {
        "cauce_marketing_consent": "false",
        "cauce_consent_given_at": "2025-03-10T09:30:15.123Z",
        "cauce_consent_date": "2025-03-10",
        "cauce_consent_source": "api",
    }
    webhook = _crm(tmp_path, "webhook")
    sent = _consent_sent(dict(to_contact(_lead(YES), webhook).properties))
    assert sent["cauce_marketing_consent"] is True
    assert sent["cauce_consent_given_at"] == "2025-03-10T09:30:15.123Z"
    assert sent["cauce_consent_date"] == "2025-03-10"
    no = to_contact(_lead(NO), webhook).properties
    assert no["cauce_marketing_consent"] is False


def test_a_given_at_with_an_offset_goes_in_utc(tmp_path: Path) -> None:
    consent = {**YES, "given_at": "2025-03-10T00:30:00+01:00"}
    hubspot = to_contact(_lead(consent), _crm(tmp_path)).properties
    assert hubspot["cauce_consent_date"] == "1741478400000"  # 2025-03-09, its UTC day
    webhook = to_contact(_lead(consent), _crm(tmp_path, "webhook")).properties
    assert webhook["cauce_consent_given_at"] == "2025-03-09T23:30:00.000Z"


def test_utm_and_custom_members_and_other_flags(tmp_path: Path) -> None:
    mapping = {
        "utm.source": "utm_src",
        "custom.vip": "vip",
        "custom_fields.plan": "plan",
        "email_free": "free",
    }
    lead = _lead(None, utm={"source": "google"}, custom_fields={"vip": False, "plan": "pro"})
    lead.email_free = False
    hubspot = to_contact(lead, _crm(tmp_path, field_mapping=mapping)).properties
    assert {k: hubspot[k] for k in mapping.values()} == {
        "utm_src": "google",
        "vip": "false",
        "plan": "pro",
        "free": "false",
    }
    webhook = to_contact(lead, _crm(tmp_path, "webhook", field_mapping=mapping)).properties
    assert (webhook["vip"], webhook["free"]) == (False, False)


# --- through delivery: a withdrawal goes as false, a consent gone as a clear ------------------


@pytest.fixture
async def db(settings_factory: SettingsFactory) -> AsyncIterator[Database]:
    database = create_database(settings_factory())
    yield database
    await database.dispose()


async def _store(db: Database, consent: dict[str, Any] | None, email: str) -> int:
    async with unit_of_work(db.sessionmaker) as session:
        lead = Lead(
            uid=str(uuid.uuid4()), source="api", email=email, email_key=email, consent=consent
        )
        session.add(lead)
        await session.flush()
        return lead.id


async def _set_consent(db: Database, lead_id: int, consent: dict[str, Any] | None) -> None:
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(
            update(Lead)
            .where(Lead.id == lead_id)
            .values(consent=consent, version=Lead.version + 1, sync_status="pending")
        )


async def test_a_withdrawal_reaches_the_crm_as_false_and_a_consent_gone_as_a_clear(
    db: Database, tmp_path: Path
) -> None:
    settings = _crm(tmp_path)
    crm = MemoryCrm()
    ana = await _store(db, YES, "ana@bodegas.es")
    luis = await _store(db, None, "luis@bodegas.es")
    await deliver(db.sessionmaker, crm, settings)
    contacts = crm.contacts
    assert contacts[CrmKey("email", "ana@bodegas.es")]["cauce_marketing_consent"] == "true"
    assert "cauce_marketing_consent" not in contacts[CrmKey("email", "luis@bodegas.es")]

    await _set_consent(db, ana, NO)
    report = await deliver(db.sessionmaker, crm, settings)
    assert report.synced == 1
    (withdrawal,) = crm.batches[-1]
    assert withdrawal.properties["cauce_marketing_consent"] == "false"
    assert withdrawal.properties["cauce_consent_wording"] is None  # the no has none

    # A consent gone (unknown) empties the property; it is not a no.
    await _set_consent(db, ana, None)
    await deliver(db.sessionmaker, crm, settings)
    (gone,) = crm.batches[-1]
    assert gone.properties["cauce_marketing_consent"] is None
    cleared = ("cauce_marketing_consent", "cauce_consent_given_at", "cauce_consent_date")
    assert _consent_sent(dict(gone.properties)) == dict.fromkeys((*cleared, "cauce_consent_source"))

    # Luis gives consent later: it goes then.
    await _set_consent(db, luis, YES)
    await deliver(db.sessionmaker, crm, settings)
    (given,) = crm.batches[-1]
    assert given.properties["cauce_marketing_consent"] == "true"


# --- end to end: the API, the jobs, each adapter ----------------------------------------------


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxCrm]:
    """A HubSpot-compatible portal with Cauce's consent properties created."""
    crm = await start_sandbox_crm(
        SandboxCrmConfig(
            seed=1, extra_properties=("cauce_score", "cauce_owner", *CONSENT_PROPERTIES.values())
        )
    )
    yield crm
    await crm.stop()


@pytest.fixture
async def app(settings_factory: SettingsFactory, sandbox: SandboxCrm) -> AsyncIterator[FastAPI]:
    settings = settings_factory(
        crm={
            "provider": "hubspot",
            "token": sandbox.token,
            "base_url": sandbox.url,
            "field_mapping": MAPPING,
        },
        jobs={"embedded_worker": False},
    )
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


async def _drain(app: FastAPI) -> None:
    resources: Resources = app.state.resources
    await job_worker_for(resources).run_until_idle(30)


async def test_hubspot_sandbox_gets_the_consent_and_its_withdrawal(
    app: FastAPI, sandbox: SandboxCrm
) -> None:
    async with await client_with(app, ["leads:read", "leads:write"]) as api:
        consent = {
            "marketing": True,
            "given_at": "2025-03-10T09:30:15.123Z",
            "wording_version": "rgpd-v3",
            "source": "https://bodegas.es/alta",
        }
        created = await api.post(
            "/v1/leads", json={"email": "ana@bodegas.es", "first_name": "Ana", "consent": consent}
        )
        assert created.status_code == 201, created.text
        plain = await api.post("/v1/leads", json={"email": "luis@bodegas.es"})
        assert plain.status_code == 201, plain.text
        await _drain(app)
        store = sandbox.state.store
        ana = store.find("email", "ana@bodegas.es")
        assert ana is not None
        assert _consent_sent(dict(ana.properties)) == {
            "cauce_marketing_consent": "true",
            "cauce_consent_given_at": GIVEN_AT_MS,
            "cauce_consent_date": GIVEN_ON_MS,
            "cauce_consent_wording": "rgpd-v3",
            "cauce_consent_source": "https://bodegas.es/alta",
        }
        luis = store.find("email", "luis@bodegas.es")
        assert luis is not None
        assert _consent_sent(dict(luis.properties)) == {}

        withdrawn = await api.patch(
            f"/v1/leads/{created.json()['id']}", json={"consent": {"marketing": False}}
        )
        assert withdrawn.status_code == 200, withdrawn.text
        await _drain(app)
        detail = (await api.get(f"/v1/leads/{created.json()['id']}")).json()
        assert detail["sync"]["status"] == "synced"
        assert ana.properties["cauce_marketing_consent"] == "false"
        assert "cauce_consent_wording" not in ana.properties  # the no names no wording
        assert ana.properties["cauce_consent_source"] == "api"


async def test_the_webhook_receiver_gets_json_booleans(
    db: Database, tmp_path: Path, wall: WallClock
) -> None:
    bodies: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/cauce", receive)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    settings = webhook_settings(tmp_path, f"http://{host}:{port}/cauce", field_mapping=MAPPING)
    clients = HttpClients(
        default_policy=fast_policy(), options=crm_client_options(settings), clock=FakeClock()
    )
    try:
        await _store(db, NO, "ana@bodegas.es")
        await _store(db, None, "luis@bodegas.es")
        hook = await make_webhook(settings, lambda **_: clients, wall)
        await deliver(db.sessionmaker, hook, settings.crm)
    finally:
        await clients.close()
        await runner.cleanup()
    items = {i["key"]["value"]: i["properties"] for b in bodies for i in b["data"]["contacts"]}
    assert items["ana@bodegas.es"]["cauce_marketing_consent"] is False
    assert items["ana@bodegas.es"]["cauce_consent_given_at"] == "2025-03-10T09:30:15.123Z"
    assert "cauce_marketing_consent" not in items["luis@bodegas.es"]


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


async def test_pipedrive_gets_a_withdrawal_as_text(db: Database, tmp_path: Path) -> None:
    fake = FakePipedrive(
        clock=ManualClock(), custom_fields=frozenset({PD_CAUCE_ID, PD_CONSENT, PD_CONSENT_AT})
    )
    runner = await serve(fake)
    clients = HttpClients(default_policy=fast_policy(), clock=FakeClock(), rng=random.Random(7))
    try:
        crm = PipedriveCrm(
            clients.get("pipedrive"),
            token="pd-token",
            base_url=fake.url,
            cauce_id_property=PD_CAUCE_ID,
        )
        mapping = {
            "email": "email",
            "uid": PD_CAUCE_ID,
            "consent_marketing": PD_CONSENT,
            "consent_given_at": PD_CONSENT_AT,
        }
        settings = _crm(tmp_path, "pipedrive", field_mapping=mapping, cauce_id_property=PD_CAUCE_ID)
        await _store(db, NO, "ana@bodegas.es")
        await deliver(db.sessionmaker, crm, settings)
    finally:
        await clients.close()
        await runner.cleanup()
    (person,) = fake.persons.values()
    assert person["custom_fields"][PD_CONSENT] == "false"
    assert person["custom_fields"][PD_CONSENT_AT] == "2025-03-10T09:30:15.123Z"


def test_the_documented_example_mapping_is_accepted(tmp_path: Path) -> None:
    """docs/configuration.md's HubSpot example starts, and sends the consent."""
    docs = Path(__file__).parents[2] / "docs" / "configuration.md"
    (row,) = [
        line for line in docs.read_text().splitlines() if "CAUCE_CRM__FIELD_MAPPING` |" in line
    ]
    example = orjson.loads(row.split("e.g. for HubSpot: `", 1)[1].split("`", 1)[0])
    assert example["consent_marketing"] == "cauce_marketing_consent"
    contact = to_contact(_lead(NO), _crm(tmp_path, field_mapping=example))
    assert contact.properties["cauce_marketing_consent"] == "false"
    assert "subscription status" in row

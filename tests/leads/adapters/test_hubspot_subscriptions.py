"""Marketing consent as a HubSpot email subscription status (CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID),
against the sandbox CRM's communication preferences v4 over 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cauce.core.config import Settings, load_settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.errors import ConfigError
from cauce.core.http import Request, Response, Transport
from cauce.leads.adapters import build_crm
from cauce.leads.adapters.hubspot import HubSpotCrm
from cauce.leads.adapters.hubspot_subscriptions import SubscriptionSetup, status_intents
from cauce.leads.delivery import deliver
from cauce.leads.models import Lead
from cauce.leads.ports import CrmContact, CrmKey, CrmThrottled, CrmUnavailable, UpsertOutcome
from cauce.sandbox import SandboxCrm
from tests.conftest import SettingsFactory
from tests.leads.adapters.conftest import (
    CUSTOM_PROPERTIES,
    MakeClients,
    MakeHubSpot,
    ManualClock,
    StartSandbox,
    WallClock,
    fast_policy,
)

MARKETING = 7_345_001  # the sandbox's "Marketing Information" subscription type
CONSENT_PROPERTIES = (
    "cauce_marketing_consent",
    "cauce_consent_given_at",
    "cauce_consent_wording",
    "cauce_consent_source",
)
SETUP = SubscriptionSetup(subscription_id=MARKETING)
MAPPING = {
    "email": "email",
    "first_name": "firstname",
    "uid": "cauce_id",
    "consent_marketing": "cauce_marketing_consent",
    "consent_given_at": "cauce_consent_given_at",
    "consent_wording_version": "cauce_consent_wording",
    "consent_source": "cauce_consent_source",
}
WRITE = "statuses/batch/write"
READ = "statuses/batch/read"
OPT_OUT_READ = "statuses/batch/unsubscribe-all/read"
#: The sandbox's wall clock (epoch seconds) when a test starts: HubSpot's status timestamps.
HUBSPOT_NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)


class SandboxWall:
    """The sandbox's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = HUBSPOT_NOW

    def __call__(self) -> float:
        return self.now.timestamp()


def stored_consent(marketing: bool, given_at: datetime) -> dict[str, Any]:
    """A lead's consent as Cauce stores it (`Consent.model_dump(mode="json")`)."""
    return {
        "marketing": marketing,
        "given_at": given_at.isoformat().replace("+00:00", "Z"),
        "wording_version": "v3",
        "source": "web-form",
    }


def lead(
    lead_id: int,
    email: str | None,
    marketing: bool | None,
    given_at: datetime = HUBSPOT_NOW - timedelta(days=1),
) -> CrmContact:
    """A contact as delivery builds it with no consent field mapped: the lead's consent
    rides on the contact (`consent`), not in its properties."""
    uid = f"00000000-0000-4000-8000-{lead_id:012d}"
    props: dict[str, Any] = {"cauce_id": uid}
    if email:
        props["email"] = email
    key = CrmKey("email", email) if email else CrmKey("cauce_id", uid)
    consent = None if marketing is None else stored_consent(marketing, given_at)
    return CrmContact(lead_id, 1, key, props, consent=consent)


def status(crm: SandboxCrm, email: str) -> str | None:
    """The sandbox's status of `email` for the marketing subscription type."""
    record = crm.state.subscriptions.statuses.get((email.lower(), MARKETING))
    return None if record is None else record.status


def calls(crm: SandboxCrm, endpoint: str) -> int:
    """Requests the sandbox has seen on `endpoint`."""
    return crm.state.stats.by_endpoint[endpoint]


@pytest.fixture
def sandbox_wall() -> SandboxWall:
    """The sandbox's wall clock."""
    return SandboxWall()


@pytest.fixture
def consent_hubspot(make_hubspot: MakeHubSpot, sandbox_wall: SandboxWall) -> MakeHubSpot:
    """A sandbox (its portal without consent properties: none is needed) and an adapter
    with SETUP."""

    async def make(**kwargs: Any) -> tuple[HubSpotCrm, SandboxCrm]:
        kwargs.setdefault("wall_clock", sandbox_wall)
        adapter = {"subscription": SETUP, **kwargs.pop("adapter", {})}
        return await make_hubspot(adapter=adapter, **kwargs)

    return make


async def test_a_yes_subscribes_with_its_legal_basis(consent_hubspot: MakeHubSpot) -> None:
    """A marketing yes sets SUBSCRIBED, with consent as the legal basis and its proof."""
    hubspot, crm = await consent_hubspot()
    given = HUBSPOT_NOW - timedelta(hours=2)
    [outcome] = await hubspot.upsert([lead(1, "Ana@Empresa.es", True, given)])
    assert outcome.ok
    record = crm.state.subscriptions.statuses[("ana@empresa.es", MARKETING)]
    assert (record.status, record.legal_basis) == ("SUBSCRIBED", "CONSENT_WITH_NOTICE")
    explanation = record.legal_basis_explanation or ""
    assert given.isoformat(timespec="seconds") in explanation
    assert "web-form" in explanation
    assert "v3" in explanation


async def test_a_later_no_unsubscribes(consent_hubspot: MakeHubSpot) -> None:
    """A withdrawal after a yes sets UNSUBSCRIBED, and needs no read first."""
    hubspot, crm = await consent_hubspot()
    await hubspot.upsert([lead(1, "ana@empresa.es", True)])
    reads = calls(crm, READ)
    [outcome] = await hubspot.upsert([lead(1, "ana@empresa.es", False, HUBSPOT_NOW)])
    assert outcome.ok
    assert status(crm, "ana@empresa.es") == "UNSUBSCRIBED"
    assert calls(crm, READ) == reads


async def test_no_consent_and_no_email_send_nothing(consent_hubspot: MakeHubSpot) -> None:
    """Without a consent (unknown is not a no), or without an email, no status request."""
    hubspot, crm = await consent_hubspot()
    outcomes = await hubspot.upsert([lead(1, "ana@empresa.es", None), lead(2, None, False)])
    assert all(o.ok for o in outcomes)
    assert calls(crm, WRITE) + calls(crm, READ) + calls(crm, OPT_OUT_READ) == 0
    assert crm.state.subscriptions.statuses == {}


def test_only_the_carried_consent_asks_a_status() -> None:
    """Consent properties alone (a mapping's, or typed in) ask nothing, nor a consent
    whose `marketing` is no yes/no; a withheld email (keyed by the Cauce id, the email
    property absent) asks nothing either."""
    uid = "00000000-0000-4000-8000-000000000009"
    props = {"cauce_id": uid, "email": "ana@empresa.es", "cauce_marketing_consent": "false"}
    contacts = [
        CrmContact(1, 1, CrmKey("email", "ana@empresa.es"), props),
        CrmContact(2, 1, CrmKey("email", "eva@empresa.es"), {}, consent={"marketing": "false"}),
        CrmContact(
            3,
            1,
            CrmKey("cauce_id", uid),
            {"cauce_id": uid},
            consent=stored_consent(False, HUBSPOT_NOW),
        ),
    ]
    done = [UpsertOutcome(c.lead_id, crm_id=str(c.lead_id)) for c in contacts]
    assert status_intents(SETUP, contacts, done) == []


async def test_the_setting_off_makes_no_status_request(make_hubspot: MakeHubSpot) -> None:
    """Without a subscription setup the consent stays properties only, as before."""
    hubspot, crm = await make_hubspot(extra_properties=CUSTOM_PROPERTIES + CONSENT_PROPERTIES)
    outcomes = await hubspot.upsert([lead(1, "ana@empresa.es", True), lead(2, "eva@e.es", False)])
    assert all(o.ok for o in outcomes)
    assert calls(crm, WRITE) + calls(crm, READ) + calls(crm, OPT_OUT_READ) == 0


async def test_a_batch_costs_one_write_not_one_per_lead(consent_hubspot: MakeHubSpot) -> None:
    """Sixty withdrawals are one write; sixty yeses add one read of each kind."""
    hubspot, crm = await consent_hubspot()
    await hubspot.upsert([lead(i, f"p{i}@empresa.es", False) for i in range(60)])
    assert (calls(crm, WRITE), calls(crm, READ), calls(crm, OPT_OUT_READ)) == (1, 0, 0)
    await hubspot.upsert([lead(i, f"q{i}@empresa.es", True) for i in range(60)])
    assert (calls(crm, WRITE), calls(crm, READ), calls(crm, OPT_OUT_READ)) == (2, 1, 1)
    assert {status(crm, f"q{i}@empresa.es") for i in range(60)} == {"SUBSCRIBED"}


@pytest.mark.parametrize("opt_out_of_all", [False, True])
async def test_a_yes_older_than_an_opt_out_in_hubspot_keeps_it(
    consent_hubspot: MakeHubSpot, sandbox_wall: SandboxWall, opt_out_of_all: bool
) -> None:
    """An opt-out made in HubSpot after the consent was given stands; a newer yes wins."""
    hubspot, crm = await consent_hubspot()
    email = "ana@empresa.es"
    async with httpx.AsyncClient(base_url=crm.url) as http:
        answer = await http.post(
            "/_sandbox/subscriptions",
            json={"email": email, "status": "UNSUBSCRIBED"}
            | ({} if opt_out_of_all else {"subscriptionId": MARKETING}),
        )
        assert answer.status_code == 200
    opted_out = sandbox_wall.now
    sandbox_wall.now += timedelta(hours=1)

    [outcome] = await hubspot.upsert([lead(1, email, True, opted_out - timedelta(days=3))])
    assert outcome.ok
    if opt_out_of_all:
        assert email in crm.state.subscriptions.opted_out_of_all
        assert status(crm, email) is None
    else:
        assert status(crm, email) == "UNSUBSCRIBED"

    [outcome] = await hubspot.upsert([lead(1, email, True, opted_out + timedelta(minutes=5))])
    assert outcome.ok
    assert status(crm, email) == "SUBSCRIBED"
    assert email not in crm.state.subscriptions.opted_out_of_all


class StatusOutage:
    """Wraps a transport: communication preferences requests answer 503 while `down`."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.down = False

    async def send(self, request: Request) -> Response:
        """Fail a status request while down; pass everything else on."""
        if self.down and "/communication-preferences/" in request.url:
            return Response(503, content=b"<html>503</html>")
        return await self.inner.send(request)

    async def close(self) -> None:
        """Close the wrapped transport."""
        await self.inner.close()


async def test_a_failed_status_call_is_retried_until_the_no_lands(
    consent_hubspot: MakeHubSpot, make_clients: MakeClients
) -> None:
    """Upsert done, status refused: the lead's outcome is retryable; the retry lands it."""
    outages: list[StatusOutage] = []

    def wrap(upstream: str, transport: Transport) -> Transport:
        outages.append(StatusOutage(transport))
        return outages[-1]

    clients = make_clients(policies={"hubspot": fast_policy()}, wrap_transport=wrap)
    hubspot, crm = await consent_hubspot(clients=clients)
    await hubspot.upsert([lead(1, "ana@empresa.es", True)])
    outages[0].down = True
    batch = [lead(1, "ana@empresa.es", False, HUBSPOT_NOW), lead(2, "eva@empresa.es", None)]
    first = await hubspot.upsert(batch)
    assert first[0].crm_id is not None
    assert not first[0].ok
    assert first[0].retryable
    assert "marketing subscription not set" in (first[0].error or "")
    assert first[1].ok  # no consent: nothing was waiting on the status
    assert status(crm, "ana@empresa.es") == "SUBSCRIBED"

    outages[0].down = False
    [again] = await hubspot.upsert(batch[:1])
    assert again.ok
    assert status(crm, "ana@empresa.es") == "UNSUBSCRIBED"


async def test_a_429_on_the_status_call_pauses_and_retries(
    consent_hubspot: MakeHubSpot, sandbox_clock: ManualClock, wall: WallClock
) -> None:
    """Status requests count against the rate limit: a 429 on one is a retryable outcome
    and the same pause as an upsert's; after it the no lands."""
    hubspot, crm = await consent_hubspot(rate_limit=3, send_retry_after=True)
    assert all(o.ok for o in await hubspot.upsert([lead(1, "ana@empresa.es", False)]))
    [outcome] = await hubspot.upsert([lead(2, "eva@empresa.es", False)])  # 3rd slot, then 429
    assert outcome.crm_id is not None
    assert outcome.retryable
    assert not outcome.ok
    assert crm.state.stats.rate_limited["TEN_SECONDLY_ROLLING"] >= 1
    assert status(crm, "eva@empresa.es") is None
    with pytest.raises(CrmThrottled):
        await hubspot.upsert([lead(2, "eva@empresa.es", False)])
    sandbox_clock.advance(11)
    wall.advance(11)
    [outcome] = await hubspot.upsert([lead(2, "eva@empresa.es", False)])
    assert outcome.ok
    assert status(crm, "eva@empresa.es") == "UNSUBSCRIBED"


async def test_an_unknown_subscription_type_fails_the_lead(consent_hubspot: MakeHubSpot) -> None:
    """HubSpot's per-input error for a subscription id it lacks is the lead's error."""
    wrong = SubscriptionSetup(subscription_id=999)
    hubspot, crm = await consent_hubspot(adapter={"subscription": wrong})
    [outcome] = await hubspot.upsert([lead(1, "ana@empresa.es", False)])
    assert not outcome.ok
    assert not outcome.retryable
    assert "999" in (outcome.error or "")
    assert crm.state.subscriptions.statuses == {}


# -- settings -------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("value", ["0", "-4", "abc", "1.5"])
def test_a_bad_subscription_id_stops_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Not a positive integer: one line naming the variable."""
    monkeypatch.setenv("CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID", value)
    with pytest.raises(ConfigError, match="CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID"):
        load_settings()


@pytest.mark.usefixtures("clean_env")
def test_the_subscription_needs_hubspot_but_no_mapped_consent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Set for another CRM it refuses to start; for HubSpot it starts with the default
    mapping (no consent field: the status follows the lead's own consent)."""
    monkeypatch.setenv("CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID", str(MARKETING))
    monkeypatch.setenv("CAUCE_CRM__PROVIDER", "pipedrive")
    with pytest.raises(ConfigError, match="but CAUCE_CRM__PROVIDER is 'pipedrive'"):
        load_settings()
    monkeypatch.setenv("CAUCE_CRM__PROVIDER", "hubspot")
    crm = load_settings().crm
    assert crm.hubspot_subscription_id == MARKETING
    assert not any(key.startswith("consent") for key in crm.field_mapping)


# -- end to end: deliver() ------------------------------------------------------------------


#: The default mapping's kind: no consent field at all (the case refused before).
NO_CONSENT_MAPPING = {"email": "email", "first_name": "firstname", "uid": "cauce_id"}


@pytest.fixture
async def e2e(
    request: pytest.FixtureRequest,
    start_sandbox: StartSandbox,
    settings_factory: SettingsFactory,
    sandbox_wall: SandboxWall,
) -> AsyncIterator[tuple[SandboxCrm, Settings, Database]]:
    """A sandbox, settings with the subscription on (the field mapping: the test's
    `mapping` parameter, else MAPPING), and this test's database."""
    mapping = getattr(request, "param", MAPPING)
    crm = await start_sandbox(
        extra_properties=CUSTOM_PROPERTIES + CONSENT_PROPERTIES, wall_clock=sandbox_wall
    )
    settings = settings_factory(
        crm={
            "provider": "hubspot",
            "token": crm.token,
            "base_url": crm.url,
            "field_mapping": mapping,
            "hubspot_subscription_id": MARKETING,
        }
    )
    database = create_database(settings)
    yield crm, settings, database
    await database.dispose()


def new_lead(email: str, consent: dict[str, Any]) -> Lead:
    """A lead row as intake stores it (enough of it for delivery)."""
    return Lead(uid=str(uuid.uuid4()), email=email, email_key=email, consent=consent, source="api")


@pytest.mark.parametrize("e2e", [NO_CONSENT_MAPPING], indirect=True)
async def test_the_status_follows_the_consent_with_no_consent_field_mapped(
    e2e: tuple[SandboxCrm, Settings, Database], make_clients: MakeClients, wall: WallClock
) -> None:
    """No consent property mapped (once refused at start-up): the lead's stored consent
    still sets the status, its explanation naming the consent's time, source and
    wording; the contact gets no consent property."""
    crm, settings, db = e2e
    client = build_crm(settings, make_clients(), clock=wall)
    assert client is not None
    given = HUBSPOT_NOW - timedelta(days=2)
    async with unit_of_work(db.sessionmaker) as session:
        session.add(new_lead("ana@empresa.es", stored_consent(True, given)))
    await deliver(db.sessionmaker, client, settings.crm)
    record = crm.state.subscriptions.statuses[("ana@empresa.es", MARKETING)]
    assert record.status == "SUBSCRIBED"
    explanation = record.legal_basis_explanation or ""
    assert given.isoformat(timespec="seconds") in explanation
    assert "web-form" in explanation
    assert "v3" in explanation
    [contact] = crm.state.store.live.values()
    assert not set(CONSENT_PROPERTIES) & set(contact.properties)

    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(
            update(Lead).values(
                consent=stored_consent(False, HUBSPOT_NOW),
                version=Lead.version + 1,
                sync_status="pending",
            )
        )
    await deliver(db.sessionmaker, client, settings.crm)
    assert status(crm, "ana@empresa.es") == "UNSUBSCRIBED"


@pytest.mark.parametrize("e2e", [NO_CONSENT_MAPPING], indirect=True)
async def test_a_lead_whose_email_another_contact_holds_sets_no_status(
    e2e: tuple[SandboxCrm, Settings, Database], make_clients: MakeClients, wall: WallClock
) -> None:
    """Two leads on one team mailbox: the second is sent keyed by its Cauce id, without
    the email, so its withdrawal does not touch the address the first lead's yes set."""
    crm, settings, db = e2e
    client = build_crm(settings, make_clients(), clock=wall)
    assert client is not None
    yes = stored_consent(True, HUBSPOT_NOW - timedelta(days=2))
    async with unit_of_work(db.sessionmaker) as session:
        session.add(new_lead("info@empresa.es", yes))
    await deliver(db.sessionmaker, client, settings.crm)
    assert status(crm, "info@empresa.es") == "SUBSCRIBED"
    writes = calls(crm, WRITE)

    async with unit_of_work(db.sessionmaker) as session:
        session.add(new_lead("info@empresa.es", stored_consent(False, HUBSPOT_NOW)))
    report = await deliver(db.sessionmaker, client, settings.crm)
    assert not report.retry_later
    async with db.sessionmaker() as session:
        second = (await session.scalars(select(Lead).order_by(Lead.id.desc()))).first()
    assert second is not None
    assert second.sync_status == "synced"
    assert crm.state.store.find("cauce_id", second.uid) is not None
    assert status(crm, "info@empresa.es") == "SUBSCRIBED"
    assert calls(crm, WRITE) == writes


async def test_delivery_retries_a_withdrawal_until_hubspot_has_it(
    e2e: tuple[SandboxCrm, Settings, Database], make_clients: MakeClients, wall: WallClock
) -> None:
    """A yes delivered subscribes; a later no whose status call fails leaves the lead
    pending, and the next delivery lands the no."""
    crm, settings, db = e2e
    outages: list[StatusOutage] = []

    def wrap(upstream: str, transport: Transport) -> Transport:
        outages.append(StatusOutage(transport))
        return outages[-1]

    client = build_crm(settings, make_clients(wrap_transport=wrap), clock=wall)
    assert client is not None
    consent = stored_consent(True, HUBSPOT_NOW - timedelta(days=1))
    async with unit_of_work(db.sessionmaker) as session:
        session.add(new_lead("ana@empresa.es", consent))
    await deliver(db.sessionmaker, client, settings.crm)
    assert status(crm, "ana@empresa.es") == "SUBSCRIBED"

    withdrawn = stored_consent(False, HUBSPOT_NOW)
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(
            update(Lead).values(consent=withdrawn, version=Lead.version + 1, sync_status="pending")
        )
    outages[0].down = True
    report = await deliver(db.sessionmaker, client, settings.crm)
    assert report.retry_later
    async with db.sessionmaker() as session:
        stored = (await session.scalars(select(Lead))).one()
    assert stored.sync_status == "pending"
    assert "marketing subscription not set" in (stored.last_sync_error or "")
    assert status(crm, "ana@empresa.es") == "SUBSCRIBED"

    outages[0].down = False
    for _ in range(3):
        try:
            report = await deliver(db.sessionmaker, client, settings.crm)
        except CrmUnavailable:
            continue
        if not report.retry_later:
            break
    assert status(crm, "ana@empresa.es") == "UNSUBSCRIBED"
    async with db.sessionmaker() as session:
        stored = (await session.scalars(select(Lead))).one()
    assert stored.sync_status == "synced"

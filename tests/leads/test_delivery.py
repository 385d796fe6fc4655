"""CRM delivery: batches, compare-and-set versions, per-record failures, re-runs."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.db.base import utcnow
from cauce.leads.delivery import deliver
from cauce.leads.models import Lead
from cauce.leads.ports import (
    CrmContact,
    CrmKey,
    CrmRecord,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
)
from tests.conftest import SettingsFactory


class MemoryCrm:
    """An in-memory CRM at the port: contacts by key, every call recorded."""

    name = "memory"

    def __init__(self, max_batch: int = 100) -> None:
        self.max_batch = max_batch
        self.contacts: dict[CrmKey, dict[str, object]] = {}
        self.ids: dict[CrmKey, str] = {}
        self.batches: list[list[CrmContact]] = []
        self.reject: set[str] = set()  # emails refused for good
        self.flaky: set[str] = set()  # emails failing once, retryably
        self.on_call: list[object] = []

    async def upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        assert len(contacts) <= self.max_batch
        assert len({c.key for c in contacts}) == len(contacts), "duplicate keys in a batch"
        self.batches.append(list(contacts))
        for hook in self.on_call:
            await hook()  # type: ignore[operator]
        outcomes = []
        for contact in contacts:
            if contact.key.value in self.reject:
                outcomes.append(UpsertOutcome(contact.lead_id, error="INVALID_EMAIL"))
                continue
            if contact.key.value in self.flaky:
                self.flaky.discard(contact.key.value)
                outcomes.append(UpsertOutcome(contact.lead_id, error="busy", retryable=True))
                continue
            self.contacts[contact.key] = dict(contact.properties)
            crm_id = self.ids.setdefault(contact.key, str(1000 + len(self.ids)))
            outcomes.append(UpsertOutcome(contact.lead_id, crm_id=crm_id))
        return outcomes

    async def delete(self, key: CrmKey) -> bool:
        # Like a CRM's unique properties: the key may be the one it was stored under or
        # another unique property of the contact (Cauce erases by its id property).
        for stored, properties in list(self.contacts.items()):
            if stored == key or properties.get(key.property) == key.value:
                del self.contacts[stored]
                return True
        return False

    async def read(self, keys: Sequence[CrmKey]) -> list[CrmRecord | None]:
        return [
            CrmRecord(self.ids[k], self.contacts[k]) if k in self.contacts else None for k in keys
        ]

    async def aclose(self) -> None:
        return None


@pytest.fixture
def crm_settings(settings_factory: SettingsFactory) -> Settings:
    return settings_factory(crm={"provider": "hubspot"})


@pytest.fixture
async def db(crm_settings: Settings) -> AsyncIterator[Database]:
    database = create_database(crm_settings)
    yield database
    await database.dispose()


async def _add_leads(db: Database, count: int, *, email: bool = True) -> list[int]:
    async with unit_of_work(db.sessionmaker) as session:
        leads = [
            Lead(
                uid=str(uuid.uuid4()),
                email=f"lead{i}@empresa.es" if email else None,
                phone=None if email else f"+3461200{i:04d}",
                first_name=f"Nombre{i}",
                source="api",
            )
            for i in range(count)
        ]
        session.add_all(leads)
        await session.flush()
        return [lead.id for lead in leads]


async def _statuses(db: Database) -> dict[int, str]:
    async with db.sessionmaker() as session:
        rows = await session.execute(select(Lead.id, Lead.sync_status))
        return {row[0]: row[1] for row in rows}


async def test_pending_leads_go_in_batches_of_the_vendor_maximum(
    db: Database, crm_settings: Settings
) -> None:
    """250 pending leads leave in batches of 100, 100, 50 and end `synced` with CRM ids."""
    ids = await _add_leads(db, 250)
    crm = MemoryCrm()
    report = await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert [len(b) for b in crm.batches] == [100, 100, 50]
    assert report.synced == 250
    assert set((await _statuses(db)).values()) == {"synced"}
    assert len(crm.contacts) == 250
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, ids[0])
        assert lead is not None
        assert lead.crm_id is not None
        assert lead.synced_version == lead.version
        assert crm.contacts[CrmKey("email", "lead0@empresa.es")]["cauce_id"] == lead.uid


async def test_leads_without_email_are_keyed_by_cauce_id(
    db: Database, crm_settings: Settings
) -> None:
    """A lead without email is upserted on the Cauce id property."""
    await _add_leads(db, 3, email=False)
    crm = MemoryCrm()
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert {key.property for key in crm.contacts} == {"cauce_id"}


async def test_a_rerun_after_a_crash_updates_instead_of_duplicating(
    db: Database, crm_settings: Settings
) -> None:
    """If the outcome was never recorded, delivering again upserts the same contacts."""
    await _add_leads(db, 20)
    crm = MemoryCrm()
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    async with unit_of_work(db.sessionmaker) as session:  # as if the bookkeeping was lost
        await session.execute(update(Lead).values(sync_status="pending", synced_version=0))
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert len(crm.batches) == 2
    assert len(crm.contacts) == 20
    assert len(set(crm.ids.values())) == 20


async def test_an_edit_during_the_call_is_sent_next_and_wins(
    db: Database, crm_settings: Settings
) -> None:
    """A lead changed while its upsert is in flight stays pending and goes again, newest last."""
    (lead_id,) = await _add_leads(db, 1)
    crm = MemoryCrm()
    edited = False

    async def edit_once() -> None:
        nonlocal edited
        if edited:
            return
        edited = True
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(
                update(Lead)
                .where(Lead.id == lead_id)
                .values(company="Nueva SL", version=Lead.version + 1, sync_status="pending")
            )

    crm.on_call.append(edit_once)
    report = await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert report.superseded == 1
    assert report.synced == 1
    assert len(crm.batches) == 2
    assert crm.contacts[CrmKey("email", "lead0@empresa.es")]["company"] == "Nueva SL"
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        assert (lead.sync_status, lead.synced_version, lead.version) == ("synced", 2, 2)


async def test_per_record_failures_are_states(db: Database, crm_settings: Settings) -> None:
    """A refused record is `failed` with its error; a passing failure stays pending."""
    ids = await _add_leads(db, 3)
    crm = MemoryCrm()
    crm.reject.add("lead1@empresa.es")
    crm.flaky.add("lead2@empresa.es")
    report = await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert report.failed_for_good == [ids[1]]
    assert report.retry_later == [ids[2]]
    statuses = await _statuses(db)
    assert statuses == {ids[0]: "synced", ids[1]: "failed", ids[2]: "pending"}
    async with db.sessionmaker() as session:
        failed = await session.get(Lead, ids[1])
        assert failed is not None
        assert failed.last_sync_error == "INVALID_EMAIL"
    again = await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert again.synced == 1
    assert (await _statuses(db))[ids[2]] == "synced"


async def test_only_mode_resends_named_leads_whatever_their_state(
    db: Database, crm_settings: Settings
) -> None:
    """Re-delivery of named failed leads sends exactly those, once."""
    ids = await _add_leads(db, 5)
    crm = MemoryCrm()
    crm.reject.add("lead3@empresa.es")
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    crm.reject.clear()
    report = await deliver(db.sessionmaker, crm, crm_settings.crm, only=[ids[3]])
    assert report.synced == 1
    assert [c.lead_id for c in crm.batches[-1]] == [ids[3]]


async def test_throttling_propagates_and_keeps_earlier_batches(
    db: Database, crm_settings: Settings
) -> None:
    """A rate limit mid-run raises; the batch the CRM accepted is synced, the throttled
    one stays pending, and no batch is sent after the limit."""
    ids = await _add_leads(db, 150)
    crm = MemoryCrm()
    calls = 0

    async def throttle_second() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise CrmThrottled(utcnow() + timedelta(seconds=10), "TEN_SECONDLY_ROLLING")

    crm.on_call.append(throttle_second)
    with pytest.raises(CrmThrottled):
        await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert [[c.lead_id for c in b] for b in crm.batches] == [ids[:100], ids[100:]]
    statuses = await _statuses(db)
    assert [i for i in ids if statuses[i] == "synced"] == ids[:100]
    assert [i for i in ids if statuses[i] == "pending"] == ids[100:]


async def test_a_request_the_crm_did_not_take_shows_on_its_leads(
    db: Database, crm_settings: Settings
) -> None:
    """An outage, a rate limit or a refused request left each lead of the batch at
    `attempts 0` and no error, however long it lasted (a black-box audit of CRM sync):
    now they say why, the next success clears it, and leads not yet sent say nothing."""
    ids = await _add_leads(db, 150)
    crm = MemoryCrm()
    failures: list[Exception] = [
        CrmUnavailable("HTTP 503 from the CRM"),
        CrmThrottled(utcnow() + timedelta(hours=3), "DAILY"),
    ]

    async def fail_first() -> None:
        if failures:
            raise failures.pop(0)

    crm.on_call.append(fail_first)
    settings = crm_settings.crm.model_copy(update={"delivery_lanes": 1})
    for expected in (CrmUnavailable, CrmThrottled):
        with pytest.raises(expected):
            await deliver(db.sessionmaker, crm, settings)
    async with db.sessionmaker() as session:
        rows = {
            lead.id: (lead.sync_status, lead.sync_attempts, lead.last_sync_error)
            for lead in (await session.scalars(select(Lead))).all()
        }
    first = rows[ids[0]]
    assert first[:2] == ("pending", 2)
    assert first[2] is not None
    assert "rate limit (DAILY)" in first[2]
    assert rows[ids[-1]] == ("pending", 0, None)  # its batch was never sent
    await deliver(db.sessionmaker, crm, settings)
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, ids[0])
        assert lead is not None
        assert (lead.sync_status, lead.last_sync_error) == ("synced", None)


async def test_erased_leads_are_never_sent(db: Database, crm_settings: Settings) -> None:
    """A tombstone stays out of deliveries."""
    ids = await _add_leads(db, 2)
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(update(Lead).where(Lead.id == ids[0]).values(erased_at=utcnow()))
    crm = MemoryCrm()
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    assert [c.lead_id for b in crm.batches for c in b] == [ids[1]]


async def test_a_refusal_is_not_written_on_a_lead_erased_while_its_batch_was_out(
    db: Database, crm_settings: Settings
) -> None:
    """The CRM's error (which may quote the contact) never lands on a tombstone: the lead
    was erased while its batch was at the CRM."""
    ids = await _add_leads(db, 1)
    crm = MemoryCrm()
    crm.reject.add("lead0@empresa.es")

    async def erase_meanwhile() -> None:
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(
                update(Lead)
                .where(Lead.id == ids[0])
                .values(email=None, erased_at=utcnow(), version=Lead.version + 1)
            )

    crm.on_call.append(erase_meanwhile)
    await deliver(db.sessionmaker, crm, crm_settings.crm)
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, ids[0])
        assert lead is not None
        assert (lead.last_sync_error, lead.sync_attempts) == (None, 0)


async def test_lanes_keep_batches_in_flight_without_sending_a_lead_twice(
    db: Database, settings_factory: SettingsFactory
) -> None:
    """With 3 lanes and a slow CRM, batches overlap (up to 3 in flight); every lead goes
    in exactly one batch and ends `synced`."""
    settings = settings_factory(crm={"provider": "hubspot", "delivery_lanes": 3})
    await _add_leads(db, 1000)
    crm = MemoryCrm()
    in_flight = peak = 0
    overlapped = asyncio.Event()

    async def slow() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            overlapped.set()
        # The first call stays until a second one is out: with a fixed 0.2 s call alone,
        # a machine slower than that to read the next batch never has two lanes out.
        # Lanes that never overlap leave the peak at 1 once this bound has passed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await overlapped.wait()
        await asyncio.sleep(0.2)
        in_flight -= 1

    crm.on_call.append(slow)
    report = await deliver(db.sessionmaker, crm, settings.crm)
    sent = [c.lead_id for batch in crm.batches for c in batch]
    assert 2 <= peak <= 3  # a slow read under load may keep the third lane behind
    assert len(sent) == len(set(sent)) == 1000
    assert report.synced == 1000
    assert set((await _statuses(db)).values()) == {"synced"}


async def test_a_lane_failure_stops_the_run_and_keeps_what_was_delivered(
    db: Database, settings_factory: SettingsFactory
) -> None:
    """When one lane's call raises, the calls other lanes have in flight are cut, no
    batch starts after it, and the error reaches the job: exactly the batches the CRM
    answered before are synced; the failed batch, the cut ones and the rest stay pending."""
    settings = settings_factory(crm={"provider": "hubspot", "delivery_lanes": 3})
    await _add_leads(db, 1000)
    crm = MemoryCrm()
    calls = 0
    six_out = asyncio.Event()
    cut: list[int] = []

    async def fail_fourth() -> None:
        nonlocal calls
        calls += 1
        number = calls
        if number == 6:
            six_out.set()
        if number <= 3:
            await asyncio.sleep(0.01 * number)
        elif number == 4:
            await six_out.wait()  # the two other lanes have their next batch out
            raise CrmUnavailable("down")
        else:
            try:
                await asyncio.Event().wait()  # no answer before the failure
            except asyncio.CancelledError:
                cut.append(number)
                raise

    crm.on_call.append(fail_fourth)
    with pytest.raises(CrmUnavailable):
        await deliver(db.sessionmaker, crm, settings.crm)
    assert len(crm.batches) == 6  # none after the failure
    assert sorted(cut) == [5, 6]
    answered = {c.lead_id for b in crm.batches[:3] for c in b}
    assert len(answered) == 300
    statuses = await _statuses(db)
    assert {i for i, status in statuses.items() if status == "synced"} == answered
    assert set(statuses.values()) == {"synced", "pending"}

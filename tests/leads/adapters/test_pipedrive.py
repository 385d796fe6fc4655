"""The Pipedrive adapter against a fake Pipedrive on 127.0.0.1, through the real HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cauce.leads.adapters import PipedriveCrm
from cauce.leads.ports import (
    OBJECT_ID,
    CrmContact,
    CrmKey,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
)
from tests.leads.adapters.conftest import MakeClients, ManualClock, WallClock, fast_policy
from tests.leads.adapters.fake_pipedrive import FakePipedrive, serve

CAUCE_ID = "a3f1c0de5b7e4e2f9c8d1b2a3c4d5e6f7a8b9c0d"  # a custom field key, as Pipedrive names them
SCORE = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"


def lead(lead_id: int, email: str | None = None, /, **props: Any) -> CrmContact:
    """A contact as delivery builds it for a Pipedrive mapping."""
    uid = f"00000000-0000-4000-8000-{lead_id:012d}"
    properties: dict[str, Any] = {CAUCE_ID: uid, **props}
    if email:
        properties["email"] = email
    key = CrmKey("email", email) if email else CrmKey(CAUCE_ID, uid)
    return CrmContact(lead_id, 1, key, properties)


MakePipedrive = Callable[..., Awaitable[tuple[PipedriveCrm, FakePipedrive]]]


@pytest.fixture
async def make_pipedrive(
    make_clients: MakeClients, sandbox_clock: ManualClock, wall: WallClock
) -> AsyncIterator[MakePipedrive]:
    """A fake Pipedrive and an adapter on it (keywords configure the fake)."""
    runners = []
    clients = make_clients(policies={"pipedrive": fast_policy()})

    async def make(**fake_fields: Any) -> tuple[PipedriveCrm, FakePipedrive]:
        fake_fields.setdefault("custom_fields", frozenset({CAUCE_ID, SCORE}))
        fake = FakePipedrive(clock=sandbox_clock, **fake_fields)
        runners.append(await serve(fake))
        adapter = PipedriveCrm(
            clients.get("pipedrive"),
            token=fake.token,
            base_url=fake.url,
            cauce_id_property=CAUCE_ID,
            clock=wall,
        )
        return adapter, fake

    yield make
    for runner in runners:
        await runner.cleanup()


def fresh(adapter: PipedriveCrm, fake: FakePipedrive, make_clients: MakeClients) -> PipedriveCrm:
    """A second adapter on the same company, with an empty cache (a restarted worker)."""
    client = make_clients(policies={"pipedrive": fast_policy()}).get("pipedrive")
    return PipedriveCrm(client, token=fake.token, base_url=fake.url, cauce_id_property=CAUCE_ID)


async def test_search_then_create_then_update_keeps_one_person(
    make_pipedrive: MakePipedrive, make_clients: MakeClients
) -> None:
    """A second upsert of the same email updates the person, even from a restarted worker."""
    adapter, fake = await make_pipedrive()
    (first,) = await adapter.upsert([lead(1, "Ana@Empresa.es", firstname="Ana", lastname="Ruiz")])
    assert first.ok
    again = fresh(adapter, fake, make_clients)
    (second,) = await again.upsert([lead(1, "ana@empresa.es", firstname="Ana María")])
    assert second.crm_id == first.crm_id
    (person,) = fake.persons.values()
    assert person["name"] == "Ana María"
    assert [e["value"] for e in person["emails"]] == ["Ana@Empresa.es"]
    assert person["custom_fields"][CAUCE_ID] == lead(1).properties[CAUCE_ID]


async def test_leads_without_email_are_found_by_the_cauce_id_field(
    make_pipedrive: MakePipedrive, make_clients: MakeClients
) -> None:
    """The Cauce id custom field keys leads without email; partial matches are ignored."""
    adapter, fake = await make_pipedrive()
    uid = str(lead(2).properties[CAUCE_ID])
    decoy: dict[str, Any] = {
        "id": 99,
        "name": "Decoy",
        "emails": [],
        "phones": [],
        "custom_fields": {CAUCE_ID: f"old-{uid}", SCORE: None},
    }
    fake.persons[99] = decoy
    (created,) = await adapter.upsert([lead(2, phone="+34612000002")])
    assert created.crm_id != "99"
    again = fresh(adapter, fake, make_clients)
    (updated,) = await again.upsert([lead(2, phone="+34612000003", **{SCORE: 40})])
    assert updated.crm_id == created.crm_id
    person = fake.persons[int(created.crm_id or 0)]
    assert [p["value"] for p in person["phones"]] == ["+34612000003", "+34612000002"]
    assert person["custom_fields"][SCORE] == 40
    assert len(fake.persons) == 2


async def test_a_refused_person_fails_alone(make_pipedrive: MakePipedrive) -> None:
    """A 400 for one person is that lead's permanent failure; the others are synced."""
    adapter, fake = await make_pipedrive()
    outcomes = await adapter.upsert(
        [
            lead(1, "a@empresa.es"),
            lead(2, "b@empresa.es", no_such_field="x"),
            lead(3, "c@empresa.es"),
        ]
    )
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error is not None
    assert "Unknown custom field" in outcomes[1].error
    assert not outcomes[1].retryable
    assert len(fake.persons) == 2


async def test_a_burst_limit_keeps_the_work_done_and_throttles_the_rest(
    make_pipedrive: MakePipedrive, wall: WallClock, sandbox_clock: ManualClock
) -> None:
    """Over the 2-second window the done contacts stay done and the rest wait, then resume."""
    adapter, fake = await make_pipedrive(burst_limit=3)
    outcomes = await adapter.upsert([lead(1, "a@empresa.es"), lead(2, "b@empresa.es")])
    assert outcomes[0].ok
    assert outcomes[1].retryable
    assert not outcomes[1].ok
    with pytest.raises(CrmThrottled) as caught:
        await adapter.upsert([lead(2, "b@empresa.es")])
    assert caught.value.policy == "BURST"
    assert timedelta(0) < caught.value.until - wall.now <= timedelta(seconds=2)
    wall.advance(2)
    sandbox_clock.advance(2)
    assert (await adapter.upsert([lead(2, "b@empresa.es")]))[0].ok
    assert len(fake.persons) == 2


async def test_an_empty_daily_budget_pauses_until_utc_midnight(
    make_pipedrive: MakePipedrive,
) -> None:
    """A 429 with no daily requests left pauses the adapter until the next UTC midnight."""
    adapter, fake = await make_pipedrive(daily_budget=0)
    with pytest.raises(CrmThrottled) as caught:
        await adapter.upsert([lead(1, "a@empresa.es")])
    assert (caught.value.policy, caught.value.until) == ("DAILY", datetime(2025, 3, 11, tzinfo=UTC))
    sent = len(fake.requests)
    with pytest.raises(CrmThrottled):
        await adapter.read([CrmKey("email", "a@empresa.es")])
    assert len(fake.requests) == sent


async def test_server_errors_are_unavailable(make_pipedrive: MakePipedrive) -> None:
    """5xx through the in-call retries is CrmUnavailable."""
    adapter, fake = await make_pipedrive()
    fake.fail_next = [503, 502, 500]
    with pytest.raises(CrmUnavailable):
        await adapter.upsert([lead(1, "a@empresa.es")])


async def test_a_wrong_token_is_rejected(make_pipedrive: MakePipedrive) -> None:
    """A 401 stops the delivery."""
    adapter, fake = await make_pipedrive()
    fake.token = "rotated"
    with pytest.raises(CrmRejected, match="401"):
        await adapter.upsert([lead(1, "a@empresa.es")])


async def test_delete_and_read_back(make_pipedrive: MakePipedrive) -> None:
    """A person reads back with its fields, is deleted once, then is unknown."""
    adapter, fake = await make_pipedrive()
    (done,) = await adapter.upsert([lead(1, "lee@empresa.es", firstname="Lía", **{SCORE: 7})])
    key = CrmKey(CAUCE_ID, str(lead(1).properties[CAUCE_ID]))
    (record,) = await adapter.read([key])
    assert record is not None
    assert record.crm_id == done.crm_id
    assert (record.properties["name"], record.properties["email"]) == ("Lía", "lee@empresa.es")
    assert record.properties[SCORE] == 7
    assert await adapter.delete(key) is True
    assert fake.persons == {}
    assert await adapter.delete(key) is False
    assert await adapter.read([key]) == [None]


async def test_delete_by_the_person_id(make_pipedrive: MakePipedrive) -> None:
    """A person is deleted by its own id (the lead's `crm_id`), whatever its fields say
    now; a second time there is none."""
    adapter, fake = await make_pipedrive()
    (done,) = await adapter.upsert([lead(1, "lee@empresa.es", firstname="Lía")])
    assert done.crm_id is not None
    assert await adapter.delete(CrmKey(OBJECT_ID, done.crm_id)) is True
    assert fake.persons == {}
    assert await adapter.delete(CrmKey(OBJECT_ID, done.crm_id)) is False

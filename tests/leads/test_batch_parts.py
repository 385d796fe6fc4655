"""A batch of more valid leads than `leads.batch_transaction_size` commits them in parts.

Between two parts other writers take their turn (a single lead is not kept waiting for
the whole batch); with an `Idempotency-Key`, a batch that stopped part-way goes on from
its last stored part when retried, and answers for the whole batch, each lead stored once.
Parts of 3 leads here, so a batch of 8 is three transactions. A batch is taken in parts
only while single leads come (parts cost a batch some speed, which buys nothing when no
single lead waits); `singles_came` says one came just now.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from cauce.app import Resources
from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.security.models import ApiKey
from cauce.core.web.idempotency import IdempotencyRecord, fingerprint
from cauce.leads.batch_parts import SINGLES_FIRST
from cauce.leads.endpoints import IDEMPOTENCY
from cauce.leads.errors import IntakeBusy
from cauce.leads.models import Lead
from cauce.leads.schemas import LeadIn
from cauce.leads.service import intake_many
from tests.conftest import SettingsFactory
from tests.leads.api_client import client_with, leads_api

PART = 3
BATCH = "/v1/leads/batch"


@pytest.fixture
async def served(
    settings_factory: SettingsFactory,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with leads_api(settings_factory, batch_transaction_size=PART) as pair:
        yield pair


@pytest.fixture
def leads_app(served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return served[0]


@pytest.fixture
def api(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@asynccontextmanager
async def _restarted(
    settings_factory: SettingsFactory, api: httpx.AsyncClient, **leads: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the server started again on the same database with these `leads`
    settings, with `api`'s key (an idempotency key belongs to its API key)."""
    async with leads_api(settings_factory, **({"batch_transaction_size": PART} | leads)) as (
        _,
        client,
    ):
        client.headers["Authorization"] = api.headers["Authorization"]
        yield client


@pytest.fixture
def singles_came(leads_app: FastAPI) -> None:
    """A single lead came just now (batches commit in parts while they do): as a
    `POST /v1/leads` does, see the test below that sends one."""
    leads_app.state.leads.singles.note()


def _lead(i: int, tag: str) -> dict[str, Any]:
    return {
        "email": f"persona{i}.{tag}@ejemplo.es",
        "first_name": f"Nombre{i}",
        "last_name": f"Apellido{i}",
        "company": f"Empresa {i} {tag} S.L.",
        "country": "ES",
    }


def _batch(n: int = 8) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    return [_lead(i, tag) for i in range(n)]


async def _lead_count(app: FastAPI) -> int:
    resources: Resources = app.state.resources
    async with resources.db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Lead)) or 0)


def _parts_seen(
    monkeypatch: pytest.MonkeyPatch, before: Callable[[int], Any] | None = None
) -> list[int]:
    """Count the parts (`intake_many` calls of `batch_parts`), calling `before(number)`
    (awaited if it returns an awaitable) as each starts."""
    original = intake_many
    seen: list[int] = []

    async def counted(session: Any, rt: Any, items: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(items))
        if before is not None:
            got = before(len(seen))
            if asyncio.iscoroutine(got):
                await got
        return await original(session, rt, items, *args, **kwargs)

    monkeypatch.setattr("cauce.leads.batch_parts.intake_many", counted)
    return seen


async def test_a_batch_past_the_part_size_is_committed_in_parts_and_answered_whole(
    api: httpx.AsyncClient, leads_app: FastAPI, monkeypatch: pytest.MonkeyPatch, singles_came: None
) -> None:
    items = _batch(8)
    items[6] = dict(items[1], company="Otra S.L.")  # a later part meets an earlier one's lead
    items.insert(4, {"email": "no es un email"})  # rejected: the others are still taken
    seen = _parts_seen(monkeypatch)

    response = await api.post(BATCH, json={"items": items})

    assert response.status_code == 200, response.text
    body = response.json()
    assert seen == [3, 3, 2]
    assert (body["received"], body["accepted"], body["rejected"]) == (9, 8, 1)
    assert [item["index"] for item in body["items"]] == list(range(9))
    outcomes = [item["outcome"] for item in body["items"]]
    assert outcomes == ["created"] * 4 + ["rejected"] + ["created"] * 2 + ["merged", "created"]
    assert body["items"][4]["errors"][0]["pointer"] == "/items/4/email"
    assert body["items"][7]["id"] == body["items"][1]["id"]
    assert body["items"][7]["duplicate"]["match"] == "email"
    assert await _lead_count(leads_app) == 7


async def test_a_batch_of_the_part_size_is_one_transaction(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, singles_came: None
) -> None:
    seen = _parts_seen(monkeypatch)
    response = await api.post(BATCH, json={"items": _batch(PART)})
    assert response.status_code == 200, response.text
    assert seen == []  # the one-transaction path, not `in_parts`


async def test_without_single_leads_lately_a_batch_is_one_transaction(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _parts_seen(monkeypatch)
    response = await api.post(BATCH, json={"items": _batch(8)})
    assert response.status_code == 200, response.text
    assert seen == []  # the one-transaction path, not `in_parts`


async def test_a_single_lead_is_taken_in_between_two_parts(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single lead came, so the next batch goes in parts. The first part is committed
    before the second starts: a single lead sent then is answered before the batch ends
    (it waited for the whole batch before), and sees the first part's leads (it merges
    into one: on PostgreSQL it needed that lead's key lock)."""
    came = await api.post("/v1/leads", json=_lead(0, uuid.uuid4().hex[:8]))
    assert came.status_code == 201, came.text
    items = _batch(8)
    singles: list[httpx.Response] = []

    async def single(number: int) -> None:
        if number == 2:
            send = api.post("/v1/leads", json=dict(items[0], job_title="Directora"))
            singles.append(await asyncio.wait_for(send, timeout=30))

    _parts_seen(monkeypatch, single)
    response = await api.post(BATCH, json={"items": items})

    assert response.status_code == 200, response.text
    assert len(singles) == 1
    assert singles[0].status_code == 200, singles[0].text  # merged, not 503 after a wait
    assert singles[0].json()["id"] == response.json()["items"][0]["id"]
    assert singles[0].json()["duplicate"]["match"] == "email"


def _fail_part(monkeypatch: pytest.MonkeyPatch, number: int) -> list[int]:
    def fail(seen: int) -> None:
        if seen == number:
            raise IntakeBusy("the test stops this part")

    return _parts_seen(monkeypatch, fail)


async def _stopped_after_first_part(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    items: list[dict[str, Any]],
    headers: dict[str, str],
) -> None:
    """Send the batch with its second part failing (503), then let parts work again."""
    _fail_part(monkeypatch, 2)
    assert (await client.post(BATCH, json={"items": items}, headers=headers)).status_code == 503
    monkeypatch.undo()


async def test_a_retry_with_the_key_goes_on_from_the_last_part_stored(
    api: httpx.AsyncClient, leads_app: FastAPI, monkeypatch: pytest.MonkeyPatch, singles_came: None
) -> None:
    items = _batch(8)
    headers = {"Idempotency-Key": "lote-1"}
    seen = _fail_part(monkeypatch, 2)
    stopped = await api.post(BATCH, json={"items": items}, headers=headers)
    assert stopped.status_code == 503, stopped.text
    assert stopped.json()["code"] == "intake_busy"
    assert await _lead_count(leads_app) == 3  # the first part stays committed
    monkeypatch.undo()
    seen = _parts_seen(monkeypatch)

    retried = await api.post(BATCH, json={"items": items}, headers=headers)

    assert retried.status_code == 200, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert seen == [3, 2]  # only the leads not stored yet
    body = retried.json()
    assert [item["outcome"] for item in body["items"]] == ["created"] * 8
    assert len({item["id"] for item in body["items"]}) == 8
    assert await _lead_count(leads_app) == 8
    # The whole answer is remembered: sent again, it is replayed, nothing is taken in.
    again = await api.post(BATCH, json={"items": items}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == body
    assert seen == [3, 2]


async def test_without_a_key_a_retry_merges_the_stored_part_into_itself(
    api: httpx.AsyncClient, leads_app: FastAPI, monkeypatch: pytest.MonkeyPatch, singles_came: None
) -> None:
    """What docs/leads.md warns of: without a key, nothing says which leads were stored."""
    items = _batch(8)
    _fail_part(monkeypatch, 3)
    assert (await api.post(BATCH, json={"items": items})).status_code == 503
    monkeypatch.undo()

    retried = await api.post(BATCH, json={"items": items})

    assert retried.status_code == 200, retried.text
    outcomes = [item["outcome"] for item in retried.json()["items"]]
    assert outcomes == ["merged"] * 6 + ["created"] * 2
    assert await _lead_count(leads_app) == 8  # none stored twice
    first = (await api.get(f"/v1/leads/{retried.json()['items'][0]['id']}")).json()
    assert first["arrivals"] == 2  # but it arrived twice


async def _claim_as_crashed(app: FastAPI, key: str, items: list[dict[str, Any]]) -> None:
    """What a process killed right after claiming `key` for this batch leaves."""
    resources: Resources = app.state.resources
    print_ = fingerprint("POST", BATCH, orjson.dumps({"items": items}))
    async with unit_of_work(resources.db.sessionmaker) as session:
        scope = str(await session.scalar(select(func.max(ApiKey.id))))
        await IDEMPOTENCY.claim(session, scope, key, print_)


async def _end_leases(app: FastAPI) -> None:
    resources: Resources = app.state.resources
    async with unit_of_work(resources.db.sessionmaker) as session:
        await session.execute(
            update(IdempotencyRecord).values(leased_until=utcnow() - timedelta(seconds=1))
        )


async def test_a_batch_claimed_by_a_request_that_crashed_is_taken_over_after_its_lease(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    items = _batch(8)
    await _claim_as_crashed(leads_app, "lote-2", items)
    headers = {"Idempotency-Key": "lote-2"}

    busy = await api.post(BATCH, json={"items": items}, headers=headers)
    other = await api.post(BATCH, json={"items": _batch(8)}, headers=headers)
    await _end_leases(leads_app)
    taken = await api.post(BATCH, json={"items": items}, headers=headers)

    assert busy.status_code == 409, busy.text
    assert busy.json()["code"] == "idempotency_key_in_use"
    assert 1 <= int(busy.headers["Retry-After"]) <= IDEMPOTENCY.lease.total_seconds()
    assert other.status_code == 422  # another body under the key: refused as ever
    assert other.json()["code"] == "idempotency_key_reused"
    assert taken.status_code == 200, taken.text
    assert [item["outcome"] for item in taken.json()["items"]] == ["created"] * 8
    assert await _lead_count(leads_app) == 8


async def test_a_small_retry_goes_on_with_a_batch_left_in_parts(
    settings_factory: SettingsFactory,
    api: httpx.AsyncClient,
    leads_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    singles_came: None,
) -> None:
    """The batch stopped after its first part; the server restarts with parts larger
    than the batch, and the retry (one part now) still goes on from the stored part."""
    items = _batch(8)
    headers = {"Idempotency-Key": "lote-3"}
    await _stopped_after_first_part(api, monkeypatch, items, headers)
    async with _restarted(settings_factory, api, batch_transaction_size=100) as again:
        retried = await again.post(BATCH, json={"items": items}, headers=headers)

    assert retried.status_code == 200, retried.text
    assert [item["outcome"] for item in retried.json()["items"]] == ["created"] * 8
    assert await _lead_count(leads_app) == 8


async def test_a_key_without_read_is_shown_only_what_each_item_became(
    leads_app: FastAPI, monkeypatch: pytest.MonkeyPatch, singles_came: None
) -> None:
    items = _batch(8)
    items.append({"phone": "12"})
    headers = {"Idempotency-Key": "lote-4"}
    async with await client_with(leads_app, ["leads:write"]) as form:
        await _stopped_after_first_part(form, monkeypatch, items, headers)
        first = await form.post(BATCH, json={"items": items}, headers=headers)
        replay = await form.post(BATCH, json={"items": items}, headers=headers)

    assert first.status_code == 202, first.text
    body = first.json()
    assert (body["received"], body["accepted"], body["rejected"]) == (9, 8, 1)
    assert [item["accepted"] for item in body["items"]] == [True] * 8 + [False]
    # No lead ids, outcomes or scores:
    assert all(set(item) == {"index", "accepted", "errors"} for item in body["items"])
    assert replay.status_code == 202
    assert replay.json() == body
    async with unit_of_work(leads_app.state.resources.db.sessionmaker) as session:
        stored = await session.scalar(select(IdempotencyRecord.body))
    assert stored is not None
    assert b"outcome" not in stored  # kept as shown


async def test_a_lead_stored_before_is_answered_as_stored_when_it_no_longer_validates(
    settings_factory: SettingsFactory,
    api: httpx.AsyncClient,
    leads_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    singles_came: None,
) -> None:
    """The batch stopped after its first part; the server restarts with another default
    phone region, under which the first lead's national number is no longer valid. The
    retry answers it as stored (created), once, not also as rejected."""
    items = _batch(8)
    items[0] = {"email": f"sin.pais.{uuid.uuid4().hex[:8]}@ejemplo.es", "phone": "612345678"}
    headers = {"Idempotency-Key": "lote-5"}
    await _stopped_after_first_part(api, monkeypatch, items, headers)
    async with _restarted(settings_factory, api, default_region="US") as again:
        fresh = await again.post(BATCH, json={"items": items[:1]})  # no key: validated now
        retried = await again.post(BATCH, json={"items": items}, headers=headers)

    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["items"][0]["outcome"] == "rejected"  # invalid under US numbering
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert [item["index"] for item in body["items"]] == list(range(8))
    assert body["items"][0]["outcome"] == "created"
    assert (body["received"], body["accepted"], body["rejected"]) == (8, 8, 0)


async def _stored_emails(app: FastAPI, emails: list[str]) -> int:
    resources: Resources = app.state.resources
    async with resources.db.sessionmaker() as session:
        query = select(func.count()).select_from(Lead).where(Lead.email.in_(emails))
        return int(await session.scalar(query) or 0)


async def test_single_leads_that_came_during_a_part_are_stored_before_the_next(
    api: httpx.AsyncClient,
    leads_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    singles_came: None,
) -> None:
    """Two single leads come during the first part (which holds SQLite's writer, its
    claim being its first statement): the first one's group waits for the writer, the
    second waits behind that group. Both are stored before the second part starts: the
    batch waits for them. Without that the second part, queued for the writer as soon
    as the first committed, went before the second single lead's group."""
    tag = uuid.uuid4().hex[:8]
    singles = [_lead(100 + i, tag) for i in range(2)]
    sent: list[asyncio.Task[httpx.Response]] = []
    stored_at_second_part: list[int] = []

    async def during(number: int) -> None:
        if number == 1:
            for single in singles:
                sent.append(asyncio.create_task(api.post("/v1/leads", json=single)))
                await asyncio.sleep(0.05)  # it reaches its group (and waits there)
        elif number == 2:
            emails = [single["email"] for single in singles]
            stored_at_second_part.append(await _stored_emails(leads_app, emails))

    _parts_seen(monkeypatch, during)
    headers = {"Idempotency-Key": "lote-6"}
    response = await api.post(BATCH, json={"items": _batch(8)}, headers=headers)

    assert response.status_code == 200, response.text
    assert stored_at_second_part == [2]
    assert [(await task).status_code for task in sent] == [201, 201]


async def test_the_wait_between_parts_ends_when_the_last_single_lead_was_left_out(
    leads_app: FastAPI,
) -> None:
    """A single lead whose request went away before its group started is left out of it;
    a batch waiting for the single leads to be through is let go at once, not after its
    whole bound (`SINGLES_FIRST`)."""
    groups = leads_app.state.leads.groups
    assert groups is not None
    lead = asyncio.create_task(groups.submit(LeadIn.model_validate(_lead(0, "x")), None, None))
    await asyncio.sleep(0)  # queued, with a drain task created but not run yet
    lead.cancel()
    started = time.monotonic()

    async with asyncio.timeout(SINGLES_FIRST / 5):  # waits before the drain's first step
        await groups.through()

    assert time.monotonic() - started < SINGLES_FIRST / 5
    with pytest.raises(asyncio.CancelledError):
        await lead


class _Deadlock(Exception):
    sqlstate = "40P01"


async def test_a_part_ended_as_a_deadlocks_victim_runs_again(
    api: httpx.AsyncClient,
    leads_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    singles_came: None,
) -> None:
    """On PostgreSQL a part (holding its key's claim, then waiting for the intake lock)
    and a request under the same key (holding the intake lock, then inserting its
    answer) can deadlock; the part, if it is the one ended, runs again."""
    ended: list[int] = []

    def deadlock_once(number: int) -> None:
        if number == 2 and not ended:
            ended.append(number)
            raise DBAPIError("INSERT INTO lead_key_locks ...", None, _Deadlock())

    seen = _parts_seen(monkeypatch, deadlock_once)
    response = await api.post(
        BATCH, json={"items": _batch(8)}, headers={"Idempotency-Key": "lote-7"}
    )

    assert response.status_code == 200, response.text
    assert seen == [3, 3, 3, 2]  # the second part twice
    assert [item["outcome"] for item in response.json()["items"]] == ["created"] * 8
    assert await _lead_count(leads_app) == 8


async def _lease_left(app: FastAPI) -> timedelta | None:
    resources: Resources = app.state.resources
    async with resources.db.sessionmaker() as session:
        until = await session.scalar(select(IdempotencyRecord.leased_until))
    return None if until is None else until - utcnow()


async def test_a_claim_the_database_could_not_release_is_released_once_it_is_back(
    api: httpx.AsyncClient, leads_app: FastAPI, monkeypatch: pytest.MonkeyPatch, singles_came: None
) -> None:
    """A batch stopped by the database going away could not end its claim either: the
    release is tried again, so the client's retry once the database is back goes on,
    instead of meeting 409 for the rest of the lease (10 s)."""
    items = _batch(8)
    headers = {"Idempotency-Key": "lote-caido"}
    down = True
    tried = 0
    release = IDEMPOTENCY.release

    tried_thrice = asyncio.Event()

    async def flaky_release(session: Any, claim: Any) -> None:
        nonlocal tried
        tried += 1
        if tried >= 3:
            tried_thrice.set()
        if down:
            raise ConnectionRefusedError("the test's database is away")
        await release(session, claim)

    _fail_part(monkeypatch, 2)
    monkeypatch.setattr(IDEMPOTENCY, "release", flaky_release)
    stopped = await api.post(BATCH, json={"items": items}, headers=headers)
    assert stopped.status_code == 503, stopped.text
    deadline = time.monotonic() + 3
    await asyncio.wait_for(tried_thrice.wait(), 3)  # the first and two tries again
    left = await _lease_left(leads_app)
    assert left is not None
    assert left > timedelta(seconds=5)
    down = False
    while time.monotonic() < deadline + 2:
        left = await _lease_left(leads_app)
        if left is None or left <= timedelta(0):
            break
        await asyncio.sleep(0.05)
    monkeypatch.undo()
    seen = _parts_seen(monkeypatch)

    retried = await api.post(BATCH, json={"items": items}, headers=headers)

    assert retried.status_code == 200, retried.text
    assert seen == [3, 2]  # went on from the part stored
    assert [item["outcome"] for item in retried.json()["items"]] == ["created"] * 8

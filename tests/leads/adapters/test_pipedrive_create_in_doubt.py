"""A Pipedrive create whose answer is lost leaves its lead "in doubt": the lead is not
searched for and created again before Pipedrive's search can show the person.

Pipedrive has no upsert and no idempotency key: a lead never synced is searched for, then
created with one POST. When that POST's answer is lost after Pipedrive wrote the person
(a 5xx from a gateway, the connection cut once the request was in, a timeout), the job's
retry searched again a second later; Pipedrive's search index lags its writes by
seconds, found nobody, and a second person was created for the lead (Cauce promises a
lead is never delivered twice). A worker dying between the create and recording its
person id did the same. Now such a create is recorded as in doubt (or, for a worker that
dies, as in flight) on the lead before its answer is needed, the lead is not sent again
until `SETTLE` after that moment (a delivery of just that lead is asked for then, while
leads accepted meanwhile go at once), and it is then found by its Cauce id, or its
email, and that person is adopted. The marks have columns of their own
(`Lead.crm_create_sent_at`, `crm_create_doubt_at`), not entries of `crm_sent_properties`.

Reproduced before the change by ``/tmp/helper-148/repro_duplicate.py`` (two persons).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from cauce.core.config import CrmSettings
from cauce.core.db import Database, create_database
from cauce.core.db.migrate import upgrade
from cauce.core.http import (
    ClientClosedError,
    HttpClients,
    Request,
    Response,
    Transport,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamServerError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamTlsError,
)
from cauce.core.jobs.ports import DeferResult, JobContext, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.resilience import (
    AttemptTimeout,
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceeded,
    RateLimitedError,
)
from cauce.core.security.ssrf import UnsafeUrlError
from cauce.leads.adapters import PipedriveCrm
from cauce.leads.adapters.pipedrive import CREATE_SETTLE_SECONDS, _may_have_created
from cauce.leads.delivery import (
    CRM_QUEUE,
    DELIVER_TASK,
    REDELIVER_TASK,
    CreateDoubt,
    DeliveryReport,
    create_doubt,
    deliver,
    delivery_lock,
)
from cauce.leads.models import Lead
from cauce.leads.ports import (
    BeforeCreate,
    CrmContact,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
)
from cauce.leads.tasks import LeadsTaskDeps, register_leads_tasks, waiting_dedupe_key
from tests.conftest import SettingsFactory, make_settings
from tests.leads.adapters.conftest import MakeClients, ManualClock, WallClock, fast_policy
from tests.leads.adapters.fake_pipedrive import FakePipedrive, serve
from tests.leads.adapters.test_pipedrive import CAUCE_ID, MakePipedrive, lead, make_pipedrive
from tests.leads.test_crm_clears import (
    PD_CAUCE_ID,
    PD_CITY,
    PD_NOTES,
    PIPEDRIVE_MAPPING,
    _crm_settings,
    _store,
    clients,
    db,
    pipedrive_settings,
)
from tests.leads.test_delivery import MemoryCrm

__all__ = ["clients", "db", "make_pipedrive"]  # fixtures, shared

# The allowance after a create in doubt: far above the search index's lag (seconds).
SETTLE = timedelta(seconds=60)
LOST = [pytest.param(503, id="5xx-after-the-write"), pytest.param("drop", id="cut-after-send")]
POST = ("POST", "/api/v2/persons")


def _posts(fake: FakePipedrive) -> int:
    return sum(1 for request in fake.requests if request == POST)


def _closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RefusedPosts:
    """Sends POSTs to a port nothing listens on: the create's connection is refused
    before a byte of it leaves (the searches go through)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.port = _closed_port()

    async def send(self, request: Request) -> Response:
        """Pass the request on, a POST to the closed port."""
        if request.method == "POST":
            url = f"http://127.0.0.1:{self.port}/api/v2/persons"
            request = Request("POST", url, request.headers, content=request.content)
        return await self.inner.send(request)

    async def close(self) -> None:
        """Close the wrapped transport."""
        await self.inner.close()


def test_the_allowance_is_far_above_the_search_lag() -> None:
    """A minute: Pipedrive's index catches up in seconds."""
    assert timedelta(seconds=CREATE_SETTLE_SECONDS) == SETTLE


# --- the adapter ------------------------------------------------------------------------


@pytest.mark.parametrize("lost", LOST)
async def test_a_create_whose_answer_is_lost_is_in_doubt(
    make_pipedrive: MakePipedrive, wall: WallClock, lost: int | str
) -> None:
    """Pipedrive wrote the person and the answer never came: the contact's outcome says
    so, and when it may be sent again; the rest of the batch is not sent (before: a
    CrmUnavailable, and nothing told the next attempt to wait)."""
    adapter, fake = await make_pipedrive(lose_create_answers=[lost])
    first, second = await adapter.upsert([lead(1, "ana@empresa.es"), lead(2, "luis@empresa.es")])
    assert (first.ok, first.retryable) == (False, True)
    assert (first.in_doubt_at, first.retry_at) == (wall.now, wall.now + SETTLE)
    assert (second.ok, second.retryable, second.in_doubt_at) == (False, True, None)
    assert len(fake.persons) == 1
    assert _posts(fake) == 1


async def test_a_contact_in_doubt_waits_out_the_allowance_without_a_request(
    make_pipedrive: MakePipedrive, wall: WallClock, sandbox_clock: ManualClock
) -> None:
    """Within the allowance the contact is neither searched for nor created."""
    adapter, fake = await make_pipedrive(search_lag=5.0)
    since = wall.now
    wall.advance(59)
    sandbox_clock.advance(59)
    contact = replace(lead(1, "ana@empresa.es"), create_in_doubt_at=since)
    (outcome,) = await adapter.upsert([contact])
    assert (outcome.ok, outcome.retryable) == (False, True)
    assert (outcome.in_doubt_at, outcome.retry_at) == (since, since + SETTLE)
    assert fake.requests == []


async def test_after_the_allowance_the_person_made_is_found_by_its_cauce_id(
    make_pipedrive: MakePipedrive, wall: WallClock, sandbox_clock: ManualClock
) -> None:
    """After the allowance the person the lost create made is found by the lead's Cauce
    id and updated, even when someone gave an older person the same email meanwhile (a
    search by email alone adopts the oldest person with it)."""
    adapter, fake = await make_pipedrive(search_lag=5.0, lose_create_answers=[503])
    colleague = fake.add_person("Recepción", "info@empresa.es")
    (lost,) = await adapter.upsert([lead(1, "ana@empresa.es", firstname="Ana")])
    (made,) = (p for p in fake.persons.values() if p["id"] != colleague)
    fake.persons[colleague]["emails"].append({"value": "ana@empresa.es", "primary": False})
    wall.advance(61)
    sandbox_clock.advance(61)
    again = replace(
        lead(1, "ana@empresa.es", firstname="Ana María"), create_in_doubt_at=lost.in_doubt_at
    )
    (adopted,) = await adapter.upsert([again])
    assert adopted.crm_id == str(made["id"])
    assert made["name"] == "Ana María"
    assert fake.persons[colleague]["name"] == "Recepción"
    assert len(fake.persons) == 2
    assert _posts(fake) == 1


async def test_after_the_allowance_a_create_that_never_landed_is_made(
    make_pipedrive: MakePipedrive, wall: WallClock, sandbox_clock: ManualClock
) -> None:
    """Nobody holds the Cauce id nor the email after the allowance: the lost create did
    not land after all, and the person is created."""
    adapter, fake = await make_pipedrive(search_lag=5.0)
    since = wall.now
    wall.advance(61)
    sandbox_clock.advance(61)
    (created,) = await adapter.upsert(
        [replace(lead(1, "ana@empresa.es"), create_in_doubt_at=since)]
    )
    assert created.ok
    assert len(fake.persons) == 1


async def test_before_create_is_awaited_before_each_create_only(
    make_pipedrive: MakePipedrive,
) -> None:
    """The hook runs right before a POST leaves (nothing written yet), once per create,
    never for an update."""
    adapter, fake = await make_pipedrive()
    fake.add_person("Luis", "luis@empresa.es")
    seen: list[tuple[int, int]] = []

    async def before_create(contact: CrmContact) -> None:
        seen.append((contact.lead_id, len(fake.persons)))

    contacts = [lead(1, "ana@empresa.es"), lead(2, "luis@empresa.es"), lead(3, "eva@empresa.es")]
    outcomes = await adapter.upsert(contacts, before_create=before_create)
    assert all(o.ok for o in outcomes)
    assert seen == [(1, 1), (3, 2)]


async def test_a_refused_create_is_not_in_doubt(make_pipedrive: MakePipedrive) -> None:
    """A 4xx says Pipedrive did not write the person: a plain failure."""
    adapter, fake = await make_pipedrive()
    (refused,) = await adapter.upsert([lead(1, "ana@empresa.es", no_such_field="x")])
    assert (refused.retryable, refused.in_doubt_at, refused.retry_at) == (False, None, None)
    assert fake.persons == {}


async def test_a_create_whose_connection_was_refused_is_not_in_doubt(
    make_clients: MakeClients, sandbox_clock: ManualClock, wall: WallClock
) -> None:
    """A connection refused before the POST left: the request as a whole is unavailable,
    as before, and nothing is in doubt."""
    fake = FakePipedrive(clock=sandbox_clock, custom_fields=frozenset({CAUCE_ID}))
    runner = await serve(fake)
    try:
        clients = make_clients(
            policies={"pipedrive": fast_policy()},
            wrap_transport=lambda _, inner: RefusedPosts(inner),
        )
        adapter = PipedriveCrm(
            clients.get("pipedrive"),
            token=fake.token,
            base_url=fake.url,
            cauce_id_property=CAUCE_ID,
            clock=wall,
        )
        with pytest.raises(CrmUnavailable) as caught:
            await adapter.upsert([lead(1, "ana@empresa.es")])
        assert isinstance(caught.value.__cause__, UpstreamConnectionError)
        assert not _may_have_created(caught.value.__cause__)
        assert fake.persons == {}
    finally:
        await runner.cleanup()


def _status(cls: type[UpstreamStatusError], status: int) -> UpstreamStatusError:
    return cls("pipedrive", Response(status, content=b"{}"))


@pytest.mark.parametrize(
    ("error", "in_doubt"),
    [
        # The request may have been applied: an error after it left.
        (_status(UpstreamServerError, 503), True),
        (_status(UpstreamServerError, 408), True),
        (UpstreamTimeoutError("timed out"), True),
        (AttemptTimeout("attempt 1 timed out"), True),
        (DeadlineExceeded("deadline passed"), True),
        (UpstreamConnectionError("reset"), True),  # reset, server gone: maybe after send
        (UpstreamProtocolError("answer over the size limit"), True),
        # Refused by Pipedrive (it answered no), or never sent.
        (_status(UpstreamClientError, 400), False),
        (_status(UpstreamRateLimitedError, 429), False),
        (CircuitOpenError("pipedrive"), False),
        (BulkheadFullError("pipedrive", reason="full"), False),
        (RateLimitedError("pipedrive", retry_after=5.0), False),
        (ClientClosedError(), False),
        (UpstreamTlsError("certificate did not verify"), False),
        (UnsafeUrlError("private", "10.0.0.1"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_which_failures_leave_a_create_in_doubt(error: Exception, in_doubt: bool) -> None:
    """Whatever may have reached Pipedrive is in doubt; a refusal or a request never sent
    is not."""
    assert _may_have_created(error) is in_doubt


# --- through delivery ---------------------------------------------------------------------


@pytest.fixture
async def fake(sandbox_clock: ManualClock) -> AsyncIterator[FakePipedrive]:
    """A fake Pipedrive with the custom fields of `pipedrive_settings`, its index 5 s behind."""
    pipedrive = FakePipedrive(
        clock=sandbox_clock,
        custom_fields=frozenset({PD_CAUCE_ID, PD_CITY, PD_NOTES}),
        search_lag=5.0,
    )
    runner = await serve(pipedrive)
    yield pipedrive
    await runner.cleanup()


def _worker(clients: HttpClients, fake: FakePipedrive, wall: WallClock) -> PipedriveCrm:
    """A worker's adapter: a fresh one per delivery (an empty cache, as after a restart)."""
    return PipedriveCrm(
        clients.get("pipedrive"),
        token=fake.token,
        base_url=fake.url,
        cauce_id_property=PD_CAUCE_ID,
        clock=wall,
    )


async def _run(
    db: Database, crm: PipedriveCrm, tmp_path: Path, wall: WallClock
) -> DeliveryReport | CrmUnavailable:
    try:
        return await deliver(db.sessionmaker, crm, pipedrive_settings(tmp_path), clock=wall)
    except CrmUnavailable as exc:
        return exc


async def _sync_state(db: Database, lead_id: int) -> tuple[str | None, str, CreateDoubt]:
    """The lead's contact id, sync status and create marks (the properties' record holds
    only properties)."""
    async with db.sessionmaker() as session:
        lead_row = await session.get(Lead, lead_id)
        assert lead_row is not None
        sent = lead_row.crm_sent_properties or []
        assert not [name for name in sent if name.startswith("#")], sent
        return lead_row.crm_id, lead_row.sync_status, create_doubt(lead_row)


def _no_doubt(doubt: CreateDoubt) -> bool:
    return doubt.since is None and not doubt.in_flight


def _later_by(wall: WallClock, clock: ManualClock, seconds: float) -> None:
    wall.advance(seconds)
    clock.advance(seconds)


@pytest.mark.parametrize("lost", LOST)
async def test_two_deliveries_after_a_lost_create_leave_one_person(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
    lost: int | str,
) -> None:
    """The create's answer is lost; the next delivery, a second later in another worker,
    sends nothing and leaves the lead waiting until the allowance has passed (before: it
    found nobody in the lagging index and made a second person). Then the person is
    adopted, its id recorded and the doubt cleared."""
    fake.lose_create_answers = [lost]
    lead_id = await _store(db, email="ana@bodegas.es", first_name="Ana", city="Sevilla")
    lost_at = wall.now
    first = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert len(fake.persons) == 1
    _later_by(wall, sandbox_clock, 1)
    second = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert len(fake.persons) == 1, "a second person for one lead"
    assert _posts(fake) == 1
    for put_off in (first, second):
        assert isinstance(put_off, DeliveryReport)
        assert put_off.waiting == {lead_id: lost_at + SETTLE}  # delivered again then
        assert (put_off.synced, put_off.retry_later) == (0, [])
    crm_id, status, doubt = await _sync_state(db, lead_id)
    assert (crm_id, status) == (None, "pending")
    assert doubt == CreateDoubt(since=lost_at)

    _later_by(wall, sandbox_clock, 60)
    third = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert isinstance(third, DeliveryReport)
    assert third.synced == 1
    (person,) = fake.persons.values()
    assert person["custom_fields"][PD_CITY] == "Sevilla"
    crm_id, status, doubt = await _sync_state(db, lead_id)
    assert (crm_id, status) == (str(person["id"]), "synced")
    assert _no_doubt(doubt)
    assert _posts(fake) == 1


class WorkerDied(Exception):
    """The process ended (killed, out of memory) after the CRM call, before its record."""


def _one_lane(tmp_path: Path) -> CrmSettings:
    """One lane: with more, another lane may read the lead after the first one stopped
    and take its mark in flight as in doubt from then (as the next run would), which
    moves the time these tests check."""
    return pipedrive_settings(tmp_path).model_copy(update={"delivery_lanes": 1})


class DiesAfterTheCall(PipedriveCrm):
    """Pipedrive does the work; the worker dies before Cauce records it."""

    async def upsert(
        self, contacts: Sequence[CrmContact], *, before_create: BeforeCreate | None = None
    ) -> list[UpsertOutcome]:
        await super().upsert(contacts, before_create=before_create)
        raise WorkerDied


async def test_a_worker_dying_between_the_create_and_its_record_leaves_one_person(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
) -> None:
    """The create was marked in flight before it left, in a transaction of its own: the
    next delivery takes the create as in doubt from when it finds that mark, and waits
    (before: a second person)."""
    lead_id = await _store(db, email="ana@bodegas.es", first_name="Ana")
    dying = DiesAfterTheCall(
        clients.get("pipedrive"),
        token=fake.token,
        base_url=fake.url,
        cauce_id_property=PD_CAUCE_ID,
        clock=wall,
    )
    with pytest.raises(WorkerDied):
        await deliver(db.sessionmaker, dying, _one_lane(tmp_path), clock=wall)
    assert (await _sync_state(db, lead_id))[2].in_flight
    _later_by(wall, sandbox_clock, 1)
    found_at = wall.now
    second = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert len(fake.persons) == 1, "a second person for one lead"
    assert isinstance(second, DeliveryReport)
    assert second.waiting == {lead_id: found_at + SETTLE}
    _later_by(wall, sandbox_clock, 60)
    third = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert isinstance(third, DeliveryReport)
    assert third.synced == 1
    (person,) = fake.persons.values()
    crm_id, status, doubt = await _sync_state(db, lead_id)
    assert (crm_id, status) == (str(person["id"]), "synced")
    assert _no_doubt(doubt)


class StallsOnTheSecondSearch:
    """Holds the second search until its call is cut (a worker stopping, a lane cancelled
    because another one failed)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.searches = 0
        self.stalled = asyncio.Event()

    async def send(self, request: Request) -> Response:
        """Pass the request on, or hold the second search for ever."""
        if request.url.split("?")[0].endswith("/persons/search"):
            self.searches += 1
            if self.searches == 2:
                self.stalled.set()
                await asyncio.Event().wait()
        return await self.inner.send(request)

    async def close(self) -> None:
        """Close the wrapped transport."""
        await self.inner.close()


async def test_a_call_cut_mid_batch_leaves_in_doubt_only_the_create_that_left(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    make_clients: MakeClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
) -> None:
    """A batch of two cut while the second lead is searched for: the first lead's create
    left (and landed), so it waits; the second's never did, so it is created at once."""
    ana = await _store(db, email="ana@bodegas.es", first_name="Ana")
    luis = await _store(db, email="luis@bodegas.es", first_name="Luis")
    stalls: list[StallsOnTheSecondSearch] = []

    def wrap(_: str, inner: Transport) -> Transport:
        stalls.append(StallsOnTheSecondSearch(inner))
        return stalls[-1]

    stalling = _worker(
        make_clients(policies={"pipedrive": fast_policy()}, wrap_transport=wrap), fake, wall
    )
    run = asyncio.create_task(deliver(db.sessionmaker, stalling, _one_lane(tmp_path), clock=wall))
    await asyncio.wait_for(stalls[0].stalled.wait(), 10)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    assert len(fake.persons) == 1  # Ana's, its answer never recorded
    assert (await _sync_state(db, ana))[2].in_flight
    assert _no_doubt((await _sync_state(db, luis))[2])

    _later_by(wall, sandbox_clock, 1)
    found_at = wall.now
    second = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert isinstance(second, DeliveryReport)
    assert second.waiting == {ana: found_at + SETTLE}
    assert len(fake.persons) == 2, "Luis is created at once, Ana is not created again"
    assert (await _sync_state(db, luis))[1] == "synced"

    _later_by(wall, sandbox_clock, 60)
    third = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert isinstance(third, DeliveryReport)
    assert third.synced == 1
    assert len(fake.persons) == 2
    assert _posts(fake) == 2


async def test_a_refused_create_is_not_in_doubt_through_delivery(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    fake: FakePipedrive,
    wall: WallClock,
) -> None:
    """A 4xx fails the lead as before, with no doubt and no wait: replayed once the
    field exists in Pipedrive, it is created at once."""
    fake.custom_fields = frozenset({PD_CAUCE_ID})  # the city's field is missing
    lead_id = await _store(db, email="ana@bodegas.es", first_name="Ana", city="Sevilla")
    refused = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert isinstance(refused, DeliveryReport)
    assert refused.failed_for_good == [lead_id]
    assert _no_doubt((await _sync_state(db, lead_id))[2])
    fake.custom_fields = frozenset({PD_CAUCE_ID, PD_CITY})
    replay = await deliver(
        db.sessionmaker,
        _worker(clients, fake, wall),
        pipedrive_settings(tmp_path),
        only=[lead_id],
        clock=wall,
    )
    assert replay.synced == 1
    assert len(fake.persons) == 1


@pytest.mark.parametrize("failure", ["refused-connection", "503-on-search", "429-on-search"])
async def test_a_create_never_sent_costs_no_wait(
    db: Database,
    tmp_path: Path,
    clients: HttpClients,
    make_clients: MakeClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
    failure: str,
) -> None:
    """A whole request that failed before any create could land (the POST's connection
    refused, a 5xx or a 429 on the search) clears the mark its batch had in flight: the
    next delivery creates the person at once."""
    lead_id = await _store(db, email="ana@bodegas.es", first_name="Ana")
    crm = _worker(clients, fake, wall)
    if failure == "refused-connection":
        refusing = make_clients(
            policies={"pipedrive": fast_policy()},
            wrap_transport=lambda _, inner: RefusedPosts(inner),
        )
        crm = _worker(refusing, fake, wall)
    elif failure == "503-on-search":
        fake.fail_next = [503, 503, 503]
    else:
        fake.fail_next = [429, 429, 429]
    failed: Exception | DeliveryReport
    try:
        failed = await deliver(db.sessionmaker, crm, pipedrive_settings(tmp_path), clock=wall)
    except (CrmThrottled, CrmUnavailable) as exc:
        failed = exc
    assert isinstance(failed, CrmThrottled | CrmUnavailable)
    assert _no_doubt((await _sync_state(db, lead_id))[2])
    _later_by(wall, sandbox_clock, 3)  # past a burst window
    report = await _run(db, _worker(clients, fake, wall), tmp_path, wall)
    assert isinstance(report, DeliveryReport)
    assert report.synced == 1
    assert len(fake.persons) == 1


class MemoryCrmDying(MemoryCrm):
    """A CRM with an upsert (HubSpot's kind) whose worker dies after the call once."""

    dies = True

    async def upsert(self, contacts: Sequence[CrmContact]) -> list[UpsertOutcome]:
        outcomes = await super().upsert(contacts)
        if self.dies:
            self.dies = False
            raise WorkerDied
        return outcomes


async def test_a_crm_with_an_upsert_marks_nothing_and_never_waits(
    db: Database, tmp_path: Path
) -> None:
    """HubSpot's and the webhook's path is unchanged: no mark before the call, and a
    worker dying after it costs no wait (their upsert is idempotent)."""
    lead_id = await _store(db, email="ana@bodegas.es", first_name="Ana")
    crm = MemoryCrmDying()
    seen: list[CreateDoubt] = []

    async def look() -> None:
        seen.append((await _sync_state(db, lead_id))[2])

    crm.on_call.append(look)
    settings = _crm_settings(tmp_path)  # HubSpot's
    with pytest.raises(WorkerDied):
        await deliver(db.sessionmaker, crm, settings)
    report = await deliver(db.sessionmaker, crm, settings)
    assert report.synced == 1
    assert seen
    assert all(_no_doubt(doubt) for doubt in seen)
    assert [c.create_in_doubt_at for batch in crm.batches for c in batch] == [None, None]


# --- through the jobs -----------------------------------------------------------------------


@dataclass
class Deferred:
    """One job a handler deferred."""

    task: str
    payload: JsonDict
    options: dict[str, Any]


@dataclass
class RecordingQueue:
    """The jobs deferred, recorded (the handlers under test are called directly)."""

    jobs: list[Deferred] = field(default_factory=list)
    engine: str = "recording"

    async def defer(
        self, session: Any, task: str, payload: JsonDict, **options: Any
    ) -> DeferResult:
        """Record the job."""
        self.jobs.append(Deferred(task, payload, options))
        return DeferResult(len(self.jobs))


class Jobs:
    """The leads handlers with a Pipedrive adapter, run as one attempt each."""

    def __init__(self, db: Database, settings_factory: SettingsFactory, crm: PipedriveCrm) -> None:
        crm_settings = {
            "provider": "pipedrive",
            "field_mapping": PIPEDRIVE_MAPPING,
            "cauce_id_property": PD_CAUCE_ID,
        }
        self.db = db
        self.settings = settings_factory(crm=crm_settings)
        self.registry = TaskRegistry()
        register_leads_tasks(self.registry, LeadsTaskDeps(self.settings, db.sessionmaker, crm))
        self.queue = RecordingQueue()

    async def run(self, task: str, payload: JsonDict) -> None:
        """One attempt: its session commits if the handler returns, else rolls back."""
        session = self.db.sessionmaker()
        ctx = JobContext(1, task, CRM_QUEUE, 1, "w", lambda: session, self.queue)  # type: ignore[arg-type]
        try:
            await self.registry.get(task).handler(ctx, payload)
            await session.commit()
        finally:
            await session.close()

    def waiting_jobs(self) -> list[Deferred]:
        """The deliveries of leads waiting for a create in doubt asked for so far."""
        return [j for j in self.queue.jobs if j.task == REDELIVER_TASK and j.payload.get("waiting")]


@pytest.mark.parametrize("lost", LOST)
async def test_a_lead_accepted_while_another_waits_is_delivered_at_once(
    db: Database,
    settings_factory: SettingsFactory,
    clients: HttpClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
    lost: int | str,
) -> None:
    """A lead waits out a create in doubt; a lead accepted meanwhile is delivered by its
    delivery job at once (before: the account's delivery job was put off until the
    allowance had passed, and every lead accepted meanwhile waited with it). The waiting
    lead goes by a delivery of just it, asked for at the allowance's end, under the
    account's lock: one person for it."""
    fake.lose_create_answers = [lost]
    jobs = Jobs(db, settings_factory, _worker(clients, fake, wall))
    ana = await _store(db, email="ana@bodegas.es", first_name="Ana")
    lost_at = wall.now
    await jobs.run(DELIVER_TASK, {"account": jobs.settings.crm.account})
    assert (await _sync_state(db, ana))[2] == CreateDoubt(since=lost_at)
    (asked,) = jobs.waiting_jobs()
    account = jobs.settings.crm.account
    assert asked.payload == {"lead_ids": [ana], "waiting": True}
    assert asked.options == {
        "queue": CRM_QUEUE,
        "run_at": lost_at + SETTLE,
        "lock": delivery_lock(account),
        "dedupe_key": waiting_dedupe_key(account, [ana]),
    }

    _later_by(wall, sandbox_clock, 10)
    luis = await _store(db, email="luis@bodegas.es", first_name="Luis")
    await jobs.run(DELIVER_TASK, {"account": account})  # returns: not put off
    assert (await _sync_state(db, luis))[1] == "synced"
    assert (await _sync_state(db, ana))[1] == "pending"
    assert len(fake.persons) == 2  # Ana's (its answer lost) and Luis's
    # Ana still waits: the same delivery is asked for again (one job: its dedupe key).
    assert [j.options for j in jobs.waiting_jobs()] == [asked.options] * 2

    _later_by(wall, sandbox_clock, 5)  # too early still: it asks again for its time
    await jobs.run(REDELIVER_TASK, asked.payload)
    assert jobs.waiting_jobs()[-1].options["run_at"] == lost_at + SETTLE
    assert (await _sync_state(db, ana))[1] == "pending"

    _later_by(wall, sandbox_clock, 46)
    await jobs.run(REDELIVER_TASK, asked.payload)
    crm_id, status, doubt = await _sync_state(db, ana)
    assert status == "synced"
    assert _no_doubt(doubt)
    persons = [p for p in fake.persons.values() if p["name"].startswith("Ana")]
    assert [str(p["id"]) for p in persons] == [crm_id], "exactly one person for Ana"
    assert len(fake.persons) == 2
    assert _posts(fake) == 2
    assert len(jobs.waiting_jobs()) == 3  # nothing asked after the delivery

    # Run again (a duplicate, or replayed): the lead is delivered already, nothing is sent.
    sent = len(fake.requests)
    await jobs.run(REDELIVER_TASK, asked.payload)
    assert len(fake.requests) == sent


async def test_a_waiting_lead_refused_after_its_wait_fails_as_a_refused_lead_does(
    db: Database,
    settings_factory: SettingsFactory,
    clients: HttpClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
) -> None:
    """After the wait the create is refused (a 4xx): the waiting lead's job does not fail
    itself; the lead is failed and a redelivery for it is left to fail, as a delivery
    job's refused leads are (replayable)."""
    fake.lose_create_answers = [503]
    jobs = Jobs(db, settings_factory, _worker(clients, fake, wall))
    ana = await _store(db, email="ana@bodegas.es", first_name="Ana", city="Sevilla")
    await jobs.run(DELIVER_TASK, {"account": jobs.settings.crm.account})
    (asked,) = jobs.waiting_jobs()
    fake.persons.clear()  # the lost create did not land, and the city's field is gone
    fake.custom_fields = frozenset({PD_CAUCE_ID})
    _later_by(wall, sandbox_clock, 61)
    await jobs.run(REDELIVER_TASK, asked.payload)
    assert (await _sync_state(db, ana))[1] == "failed"
    assert [(j.task, j.payload) for j in jobs.queue.jobs[1:]] == [
        (REDELIVER_TASK, {"lead_ids": [ana]})
    ]


# --- migration 0027 -------------------------------------------------------------------------


async def test_migration_0027_takes_the_old_marks_out_of_the_properties(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Leads stored with the marks' old entries in `crm_sent_properties` keep only their
    properties, in order; the other leads are left as they were."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    try:
        await upgrade(db, "0026")
        insert = text(
            "INSERT INTO leads (uid, status, source, score, score_model, version, sync_status,"
            " synced_version, sync_attempts, email_disposable, email_free, utm, custom_fields,"
            " score_reasons, match_keys, crm_sent_properties, created_at, updated_at)"
            " VALUES (:uid, 'new', 'api', 0, 'points', 1, 'pending', 0, 0, false, false, '{}',"
            " '{}', '[]', '[]', :sent, :now, :now)"
        )
        stored = {
            "a": '["city", "email", "#create in doubt since 2026-12-06T10:00:00+00:00",'
            ' "#create in flight"]',
            "b": '["#create in flight"]',
            "c": '["zip", "city"]',
            "d": None,
        }
        now = datetime.now(UTC)
        async with db.engine.begin() as conn:
            for uid, sent in stored.items():
                await conn.execute(insert, {"uid": uid, "sent": sent, "now": now})
        await upgrade(db, "0027")
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT uid, crm_sent_properties, crm_create_sent_at, crm_create_doubt_at"
                    " FROM leads ORDER BY uid"
                )
            )
            found = {
                uid: (orjson.loads(sent) if isinstance(sent, str) else sent, flight, doubt)
                for uid, sent, flight, doubt in rows.all()
            }
        assert found == {
            "a": (["city", "email"], None, None),
            "b": ([], None, None),
            "c": (["zip", "city"], None, None),
            "d": (None, None, None),
        }
    finally:
        await db.dispose()

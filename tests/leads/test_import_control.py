"""Controlling CSV imports: `POST /v1/leads/import/{id}/cancel` stops a running import at
a chunk boundary (the rows imported so far stay) and a queued one before it starts; the
status shows the import's job; `leads.import_concurrency` bounds the imports one process
runs at once, an import finding no slot giving its worker slot back to other queues."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select, update

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.factory import JobWorker
from cauce.core.jobs.ports import AttemptOutcome, JobStatus
from cauce.leads import imports, imports_upkeep
from cauce.leads.imports_upkeep import SLOT_WAIT_MAX_SECONDS, ImportSlots
from cauce.leads.models import LeadImport, LeadSource
from cauce.leads.service import LeadsRuntime
from tests.conftest import SettingsFactory
from tests.leads.import_client import error_report, import_csv, post_csv
from tests.leads.test_delivery import MemoryCrm
from tests.leads.test_imports import RecordingQueue, _start

ROWS, BAD_EVERY = 1000, 10  # five chunks; rows 0, 10, 20... have a bad email
WAIT = 30.0  # no step of these tests takes near this long


def _csv(rows: int, domain: str, *, bad_every: int = 0) -> bytes:
    lines = ["Nombre,Correo\r\n"]
    for i in range(rows):
        email = f"p{i}@" if bad_every and i % bad_every == 0 else f"p{i}@{domain}"
        lines.append(f"Persona{i},{email}\r\n")
    return "".join(lines).encode()


class Gate:
    """Holds the job of any import about to import its chunk number `before_chunk`
    until `open()`: the job keeps its worker slot meanwhile, as a long import does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, before_chunk: int) -> None:
        self.reached = asyncio.Event()
        self._open = asyncio.Event()
        calls: dict[int, int] = {}
        original = imports._process_chunk

        async def gated(rt: LeadsRuntime, record_id: int, *args: Any) -> None:
            calls[record_id] = calls.get(record_id, 0) + 1
            if calls[record_id] == before_chunk:
                self.reached.set()
                await self._open.wait()
            await original(rt, record_id, *args)

        monkeypatch.setattr(imports, "_process_chunk", gated)

    def open(self) -> None:
        self._open.set()


async def _status(api: httpx.AsyncClient, import_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/leads/import/{import_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until `check()` holds (every 50 ms, for `WAIT` seconds at most)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _arrivals(rt: LeadsRuntime, domain: str) -> int:
    async with rt.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(LeadSource.email.like(f"%@{domain}"))
        )
    return int(count or 0)


@pytest.fixture
async def idle_worker(leads_app: FastAPI) -> AsyncIterator[JobWorker]:
    """A worker for the import queue that runs only inside `run_until_idle` (on both
    databases: nothing runs before the test has set the stage)."""
    resources: Resources = leads_app.state.resources
    imports_worker = job_worker_for(resources, queues=[imports.IMPORT_QUEUE])
    yield imports_worker
    await imports_worker.stop()


async def _upload_path(rt: LeadsRuntime, import_id: str) -> Path:
    async with rt.sessionmaker() as session:
        record = await imports.get_import(session, int(import_id))
    return Path(record.path)


async def test_cancelling_a_running_import_stops_it_at_a_chunk_boundary(
    leads_app: FastAPI,
    api: httpx.AsyncClient,
    idle_worker: JobWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancel while the third chunk is about to be imported answers 202 `cancelling`
    (again when sent twice); the job then stops before that chunk: the import ends
    `cancelled` with the 400 rows of the first two chunks imported and counted, its
    report of their rejected rows served, its upload deleted; asked again, 200 as it is."""
    rt: LeadsRuntime = leads_app.state.leads
    resources: Resources = leads_app.state.resources
    gate = Gate(monkeypatch, before_chunk=3)
    created = await post_csv(api, _csv(ROWS, "ejcorte.es", bad_every=BAD_EVERY))
    assert created.status_code == 202, created.text
    import_id = created.json()["id"]
    upload = await _upload_path(rt, import_id)
    running = asyncio.create_task(idle_worker.run_until_idle(60))
    try:
        await asyncio.wait_for(gate.reached.wait(), WAIT)
        before = await _status(api, import_id)
        assert (before["state"], before["rows_read"]) == ("running", 2 * imports.CHUNK_ROWS)

        for _ in range(2):
            asked = await api.post(f"/v1/leads/import/{import_id}/cancel")
            assert asked.status_code == 202, asked.text
            body = asked.json()
            assert (body["id"], body["state"], body["detail"]) == (
                import_id,
                "cancelling",
                imports.CANCEL_PENDING,
            )
            assert body["finished_at"] is None
        report = await api.get(f"/v1/leads/import/{import_id}/errors.csv")
        assert (report.status_code, report.json()["code"]) == (409, "import_not_finished")
    finally:
        gate.open()
        await asyncio.wait_for(running, WAIT)

    done = await _status(api, import_id)
    kept = 2 * imports.CHUNK_ROWS
    assert (done["state"], done["rows_read"], done["rows_rejected"]) == (
        "cancelled",
        kept,
        kept // BAD_EVERY,
    )
    valid = kept - kept // BAD_EVERY
    assert done["rows_created"] + done["rows_merged"] + done["rows_held"] == valid
    assert done["detail"] == (
        f"cancelled on request after {kept} rows: those stay imported (the rejected ones "
        "are in the error report); the rest of the file was not read"
    )
    assert done["finished_at"] is not None
    assert await _arrivals(rt, "ejcorte.es") == valid
    lines = await error_report(api, done)
    assert [int(line[0]) for line in lines[1:]] == [2 + BAD_EVERY * k for k in range(40)]
    assert not upload.exists()
    job = await resources.jobs.get(done["job_id"])
    assert job is not None
    assert job.status == JobStatus.SUCCEEDED

    again = await api.post(f"/v1/leads/import/{import_id}/cancel")
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("state", "rows_read", "detail")} == {
        k: done[k] for k in ("state", "rows_read", "detail")
    }


async def test_cancelling_a_queued_import_means_it_never_starts(
    leads_app: FastAPI, api: httpx.AsyncClient, idle_worker: JobWorker
) -> None:
    """A queued import cancelled answers 200 `cancelled` at once, its upload deleted;
    its job, when it runs, reads no row: no lead, no `started_at`, still `cancelled`."""
    rt: LeadsRuntime = leads_app.state.leads
    created = await post_csv(api, _csv(30, "ejcola.es"))
    import_id = created.json()["id"]
    upload = await _upload_path(rt, import_id)
    answer = await api.post(f"/v1/leads/import/{import_id}/cancel")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["state"], body["rows_read"], body["detail"]) == (
        "cancelled",
        0,
        "cancelled on request before any row was imported",
    )
    assert body["finished_at"] is not None
    assert not upload.exists()
    twice = await api.post(f"/v1/leads/import/{import_id}/cancel")
    assert (twice.status_code, twice.json()["state"]) == (200, "cancelled")

    await idle_worker.run_until_idle(60)
    after = await _status(api, import_id)
    assert (after["state"], after["started_at"], after["rows_read"]) == ("cancelled", None, 0)
    assert await _arrivals(rt, "ejcola.es") == 0
    report = await api.get(f"/v1/leads/import/{import_id}/errors.csv")
    assert report.status_code == 200, report.text


async def test_a_cancel_request_outlives_a_crash_of_the_worker(
    leads_app: FastAPI, api: httpx.AsyncClient, idle_worker: JobWorker
) -> None:
    """An import left `cancelling` by a worker that died mid-chunk (its job back in the
    queue) is ended `cancelled` by the job's next run, before any further row."""
    rt: LeadsRuntime = leads_app.state.leads
    created = await post_csv(api, _csv(500, "ejcaida.es"))
    import_id = created.json()["id"]
    async with unit_of_work(rt.sessionmaker) as session:  # two chunks in, then the crash
        await session.execute(
            update(LeadImport)
            .where(LeadImport.id == int(import_id))
            .values(status=imports.CANCELLING, rows_processed=400, error=imports.CANCEL_PENDING)
        )
    await idle_worker.run_until_idle(60)
    done = await _status(api, import_id)
    assert (done["state"], done["rows_read"]) == ("cancelled", 400)
    assert done["detail"].startswith("cancelled on request after 400 rows")
    assert await _arrivals(rt, "ejcaida.es") == 0  # the test skipped the first 400 itself


async def test_an_import_whose_job_stopped_is_cancelled_at_once(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A running import whose job is not running (here cancelled by an operator after
    the import's first chunk, so shown `failed`) ends `cancelled` at once: 200, its
    upload deleted, its rows kept; a replay of its job then changes nothing."""
    resources: Resources = leads_app.state.resources
    rt: LeadsRuntime = leads_app.state.leads
    created = await post_csv(api, _csv(300, "ejparado.es"))
    import_id, job_id = created.json()["id"], created.json()["job_id"]
    upload = await _upload_path(rt, import_id)
    await resources.jobs.cancel(job_id)
    async with unit_of_work(rt.sessionmaker) as session:
        await session.execute(
            update(LeadImport)
            .where(LeadImport.id == int(import_id))
            .values(status=imports.RUNNING, rows_processed=200)
        )
    assert (await _status(api, import_id))["state"] == "failed"
    answer = await api.post(f"/v1/leads/import/{import_id}/cancel")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["state"], answer.json()["rows_read"]) == ("cancelled", 200)
    assert not upload.exists()
    await resources.jobs.retry(job_id)
    await job_worker_for(resources, queues=[imports.IMPORT_QUEUE]).run_until_idle(60)
    after = await _status(api, import_id)
    assert (after["state"], after["rows_read"]) == ("cancelled", 200)
    assert await _arrivals(rt, "ejparado.es") == 0


async def test_an_import_asked_to_stop_whose_job_then_stopped_shows_cancelled(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Asked to stop while running, then its job stopped before it saw the request (here
    cancelled by an operator): the status says `cancelled`, not `failed` with a hint to
    resume it (caught by review); a replay of the job ends the row so."""
    resources: Resources = leads_app.state.resources
    rt: LeadsRuntime = leads_app.state.leads
    created = await post_csv(api, _csv(300, "ejpedido.es"))
    import_id, job_id = created.json()["id"], created.json()["job_id"]
    await resources.jobs.cancel(job_id)
    async with unit_of_work(rt.sessionmaker) as session:
        await session.execute(
            update(LeadImport)
            .where(LeadImport.id == int(import_id))
            .values(status=imports.CANCELLING, rows_processed=200, error=imports.CANCEL_PENDING)
        )
    shown = await _status(api, import_id)
    assert shown["state"] == "cancelled", shown
    assert "cauce jobs retry" not in shown["detail"]
    assert "200 rows read stay imported" in shown["detail"]
    await resources.jobs.retry(job_id)
    await job_worker_for(resources, queues=[imports.IMPORT_QUEUE]).run_until_idle(60)
    after = await _status(api, import_id)
    assert (after["state"], after["rows_read"]) == ("cancelled", 200)


async def test_the_sweep_ends_a_cancelling_import_whose_job_is_gone_as_cancelled(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """An import asked to stop whose job is gone (purged before it saw the request) is
    ended `cancelled` by the upload sweep, which deletes its upload."""
    rt: LeadsRuntime = leads_app.state.leads
    # Recorded with no job in the queue: as after its job was cancelled, then purged.
    no_job = dataclasses.replace(rt, queue=RecordingQueue())  # type: ignore[arg-type]
    import_id = await _start(no_job, _csv(3, "ejbarrido.es"))
    async with unit_of_work(rt.sessionmaker) as session:
        record = await imports.get_import(session, import_id)
        record.status = imports.CANCELLING
        upload = Path(record.path)
    old = time.time() - 2 * 3600  # older than the sweep's bound (an hour)
    os.utime(upload, (old, old))
    assert await imports_upkeep.sweep_uploads(rt) == 1
    done = await _status(api, str(import_id))
    assert done["state"] == "cancelled"
    assert done["detail"] == "cancelled on request; its job was gone, and its upload was deleted"
    assert done["finished_at"] is not None
    assert not upload.exists()


async def test_an_import_that_ended_on_its_own_cannot_be_cancelled(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """Cancelling a succeeded import is a 409 `import_finished` whose problem gives its
    state and status, and changes nothing."""
    status = await import_csv(api, worker, _csv(3, "ejhecho.es"))
    answer = await api.post(f"/v1/leads/import/{status['id']}/cancel")
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert (problem["code"], problem["state"]) == ("import_finished", "succeeded")
    assert problem["detail"] == "the import already succeeded: there is nothing left to cancel"
    assert (problem["import"]["id"], problem["import"]["rows_created"]) == (status["id"], 3)
    assert (await _status(api, status["id"]))["state"] == "succeeded"


async def test_cancel_needs_leads_write_and_an_import_that_exists(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """An unknown id, or one that is no id, is a 404 `import_not_found`; a key without
    `leads:write`, or without `leads:read`, gets 403 and the import goes on."""
    for unknown in ("999999", "abc"):
        answer = await api.post(f"/v1/leads/import/{unknown}/cancel")
        assert (answer.status_code, answer.json()["code"]) == (404, "import_not_found")
    created = await post_csv(api, _csv(3, "ejscope.es"))
    import_id = created.json()["id"]
    resources: Resources = leads_app.state.resources
    for scopes, missing in ((["leads:read"], "leads:write"), (["leads:write"], "leads:read")):
        # A cancel answers the import's status: a form's write-only key is shown none.
        key = await resources.api_keys.create("narrow", scopes)
        answer = await api.post(
            f"/v1/leads/import/{import_id}/cancel",
            headers={"Authorization": f"Bearer {key.token}"},
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["required_scope"] == missing
    assert (await _status(api, import_id))["state"] == "queued"


async def test_the_status_names_the_imports_job(leads_app: FastAPI, api: httpx.AsyncClient) -> None:
    """The upload's answer and the status give `job_id`, the job that runs the import."""
    resources: Resources = leads_app.state.resources
    created = await post_csv(api, _csv(3, "ejjob.es"))
    import_id = created.json()["id"]
    job_id = created.json()["job_id"]
    assert isinstance(job_id, int)
    assert (await _status(api, import_id))["job_id"] == job_id
    job = await resources.jobs.get(job_id)
    assert job is not None
    assert (job.task, job.payload) == (imports.IMPORT_TASK, {"import_id": int(import_id)})


# -- how many imports run at once --------------------------------------------------------


@pytest.fixture
async def bounded_app(
    settings_factory: SettingsFactory, crm: MemoryCrm, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FastAPI]:
    """The app with one import at a time per process, an import waiting 0.2 s between
    looks for a slot, and no background worker (the test runs one)."""
    monkeypatch.setattr(imports_upkeep, "SLOT_WAIT_SECONDS", 0.2)
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"import_concurrency": 1},
    )
    app = create_app(settings, crm=crm)
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def bounded_api(bounded_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    resources: Resources = bounded_app.state.resources
    key = await resources.api_keys.create("t", ["leads:read", "leads:write"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bounded_app),
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    ) as client:
        yield client


async def test_an_import_past_the_bound_waits_and_other_jobs_keep_running(
    bounded_app: FastAPI,
    bounded_api: httpx.AsyncClient,
    crm: MemoryCrm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `leads.import_concurrency` 1 and two worker slots, a second import waits
    (`queued`, its job postponed, no attempt used up) while the first runs, and a lead's
    CRM delivery still gets a slot and is delivered; once the first ends, the second
    imports."""
    resources: Resources = bounded_app.state.resources
    api = bounded_api
    gate = Gate(monkeypatch, before_chunk=2)
    first = (await post_csv(api, _csv(300, "ejprimero.es"))).json()
    second = (await post_csv(api, _csv(30, "ejsegundo.es"))).json()  # one chunk: no gate
    worker = job_worker_for(resources, concurrency=2)
    await worker.start()
    try:
        await asyncio.wait_for(gate.reached.wait(), WAIT)
        lead = await api.post("/v1/leads", json={"email": "solo@ejsolo.es", "source": "web_form"})
        assert lead.status_code == 201, lead.text

        async def delivered() -> bool:
            return any(key.value == "solo@ejsolo.es" for key in crm.contacts)

        await _until(delivered, "the lead's delivery while an import holds its slot")

        async def postponed() -> bool:
            job = await resources.jobs.get(second["job_id"])
            assert job is not None
            return any(a.outcome == AttemptOutcome.POSTPONED for a in job.attempts)

        await _until(postponed, "the second import's job to give its slot back")
        job = await resources.jobs.get(second["job_id"])
        assert job is not None
        waits = [a for a in job.attempts if a.outcome == AttemptOutcome.POSTPONED]
        assert waits[0].error_message == (
            "waiting for an import slot: this process already runs 1 import "
            "(leads.import_concurrency = 1)"
        )
        assert all(a.outcome == AttemptOutcome.POSTPONED for a in job.attempts[:-1])
        assert (await _status(api, second["id"]))["state"] == "queued"
        assert (await _status(api, first["id"]))["state"] == "running"
    finally:
        gate.open()

    async def both_done() -> bool:
        states = [(await _status(api, i["id"]))["state"] for i in (first, second)]
        return states == ["succeeded", "succeeded"]

    try:
        await _until(both_done, "both imports to finish")
    finally:
        await worker.stop()
    assert (await _status(api, second["id"]))["rows_created"] == 30
    job = await resources.jobs.get(second["job_id"])
    assert job is not None
    assert job.status == JobStatus.SUCCEEDED
    counted = [a for a in job.attempts if a.outcome != AttemptOutcome.POSTPONED]
    assert [a.attempt for a in counted] == [1]


def test_an_import_waiting_for_a_slot_comes_back_less_and_less_often() -> None:
    """5 s, then half as long again after each wait, up to 30 s (give or take a fifth):
    a fixed 5 s wrote ~17,000 attempt rows a day for one import waiting (caught by review)."""
    slots = ImportSlots(1, rng=random.Random(3))
    assert slots.take()
    delays = []
    for attempt in range(1, 12):
        delays.append((slots.wait(attempt).at - utcnow()).total_seconds())
    assert 3.9 <= delays[0] <= 6.1
    assert delays[3] > delays[0]
    assert all(d <= SLOT_WAIT_MAX_SECONDS * 1.2 + 0.1 for d in delays)
    assert delays[-1] >= SLOT_WAIT_MAX_SECONDS * 0.8 - 0.1

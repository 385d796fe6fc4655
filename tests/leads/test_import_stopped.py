"""CSV imports whose job stopped: a job that failed for good or was cancelled shows its
import `failed`, saying why and how to resume it (the row, which a replay of the job
resumes, still says `queued` or `running`); the report of the rows rejected so far is
served; a replayed job finishes the import, every row imported once."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import Connection, func, inspect, select, text, update
from sqlalchemy.exc import OperationalError

from cauce.app import Resources
from cauce.core.db import create_database, unit_of_work
from cauce.core.db.migrate import alembic_config, upgrade
from cauce.core.jobs.factory import JobWorker, build_job_worker
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import AttemptOutcome, AttemptView, JobStatus, JobView
from cauce.core.jobs.registry import TaskRegistry
from cauce.leads import imports, imports_upkeep
from cauce.leads.models import LeadImport, LeadSource
from cauce.leads.service import LeadsRuntime
from tests.conftest import make_settings
from tests.leads.import_client import error_report, post_csv
from tests.leads.test_imports import _csv

# Three attempts, each straight after the one before (no backoff to wait for).
FAST = RetryPolicy(max_attempts=3, base_seconds=0.0, cap_seconds=0.0)
ROWS, BAD_EVERY = 450, 10  # rows 0, 10, 20... have a bad phone


@pytest.fixture
async def fast_worker(leads_app: FastAPI) -> AsyncIterator[JobWorker]:
    """A worker for the import queue whose import task tries three times at once; each
    `run_until_idle` starts and stops it (so nothing runs between them)."""
    resources: Resources = leads_app.state.resources
    tasks = TaskRegistry()
    for spec in resources.tasks.tasks.values():
        tasks.add(
            dataclasses.replace(spec, policy=FAST) if spec.name == imports.IMPORT_TASK else spec
        )
    worker = build_job_worker(
        resources.jobs,
        resources.db,
        tasks,
        resources.job_metrics,
        resources.settings.jobs,
        tracer_provider=resources.tracer_provider,
        queues=[imports.IMPORT_QUEUE],
    )
    yield worker
    await worker.stop()


def _database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first chunk is imported; every chunk after it fails as with the database down
    (a driver's error: several lines, the SQL among them)."""
    original = imports._process_chunk
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OperationalError(
                "INSERT INTO leads (email) VALUES (?)",
                {"email": "p201@empresa.es"},
                ConnectionRefusedError("the database is down\nis the server running?"),
            )
        await original(*args, **kwargs)

    monkeypatch.setattr(imports, "_process_chunk", flaky)


async def _job_id(rt: LeadsRuntime, import_id: int) -> int:
    async with rt.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
    assert record.job_id is not None
    return record.job_id


async def _status(api: httpx.AsyncClient, import_id: int | str) -> dict[str, Any]:
    response = await api.get(f"/v1/leads/import/{import_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_failed_job_shows_its_import_failed_until_it_is_replayed(
    leads_app: FastAPI,
    api: httpx.AsyncClient,
    fast_worker: JobWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An import whose job spent its attempts on an unexpected error answers `failed`,
    naming the job, its last error (one line, no SQL) and how to resume it, and serves
    the report of the rows rejected so far; replayed with the fault gone, it finishes
    where it stopped, every row imported once."""
    resources: Resources = leads_app.state.resources
    rt: LeadsRuntime = leads_app.state.leads
    _database_down(monkeypatch)
    created = await post_csv(api, _csv(ROWS, bad_every=BAD_EVERY))
    assert created.status_code == 202, created.text
    import_id = int(created.json()["id"])
    job_id = await _job_id(rt, import_id)
    await fast_worker.run_until_idle(60)

    job = await resources.jobs.get(job_id)
    assert job is not None
    assert (job.status, job.payload) == (JobStatus.FAILED, {"import_id": import_id})
    stopped = await _status(api, import_id)
    assert stopped["state"] == "failed"
    assert stopped["detail"] == (
        "stopped: its job failed after 3 attempts (last error: OperationalError: "
        "(builtins.ConnectionRefusedError) the database is down); "
        f"`cauce jobs retry {job_id}` resumes it where it stopped"
    )
    assert (stopped["rows_read"], stopped["rows_rejected"]) == (imports.CHUNK_ROWS, 20)
    assert stopped["finished_at"] is None
    assert stopped["error_report_url"] == f"/v1/leads/import/{import_id}/errors.csv"
    report = await error_report(api, stopped)
    assert report[0] == ["row", "column", "field", "reason"]
    assert [int(line[0]) for line in report[1:]] == [2 + BAD_EVERY * k for k in range(20)]

    monkeypatch.undo()
    await resources.jobs.retry(job_id)
    again = await _status(api, import_id)
    assert (again["state"], again["detail"]) == ("running", None)
    await fast_worker.run_until_idle(60)
    done = await _status(api, import_id)
    assert (done["state"], done["detail"], done["rows_read"]) == ("succeeded", None, ROWS)
    assert done["rows_rejected"] == ROWS // BAD_EVERY
    valid = ROWS - ROWS // BAD_EVERY
    assert done["rows_created"] + done["rows_merged"] + done["rows_held"] == valid
    async with rt.sessionmaker() as session:
        arrivals = (
            await session.execute(
                select(func.count(), func.count(LeadSource.email.distinct())).where(
                    LeadSource.email.like("%@empresa.es")
                )
            )
        ).one()
    assert tuple(arrivals) == (valid, valid)
    report = await error_report(api, done)
    assert [int(line[0]) for line in report[1:]] == [2 + BAD_EVERY * k for k in range(45)]


async def test_a_cancelled_job_shows_its_import_failed_and_a_replay_runs_it(
    leads_app: FastAPI, api: httpx.AsyncClient, fast_worker: JobWorker
) -> None:
    """An import whose job was cancelled before it ran answers `failed` with the cancel
    wording, in its status and in the replayed answer of the same upload; its (empty)
    report is served; `cauce jobs retry` queues it again and it imports."""
    resources: Resources = leads_app.state.resources
    data = b"Nombre,Correo\r\nAna,ana@ejcancel.es\r\n"
    key = {"Idempotency-Key": "stop-1"}
    created = await api.post(
        "/v1/leads/import", files={"file": ("leads.csv", data, "text/csv")}, headers=key
    )
    assert (created.status_code, created.json()["state"]) == (202, "queued")
    import_id = created.json()["id"]
    job_id = await _job_id(leads_app.state.leads, int(import_id))
    await resources.jobs.cancel(job_id)

    wording = (
        f"stopped: its job was cancelled; `cauce jobs retry {job_id}` resumes it where it stopped"
    )
    stopped = await _status(api, import_id)
    assert (stopped["state"], stopped["detail"], stopped["finished_at"]) == (
        "failed",
        wording,
        None,
    )
    replay = await api.post(
        "/v1/leads/import", files={"file": ("leads.csv", data, "text/csv")}, headers=key
    )
    assert replay.headers["idempotent-replayed"] == "true"
    assert (replay.json()["id"], replay.json()["state"]) == (import_id, "failed")
    assert replay.json()["detail"] == wording
    report = await api.get(f"/v1/leads/import/{import_id}/errors.csv")
    assert report.status_code == 200, report.text
    assert report.text.removeprefix("\ufeff").splitlines() == ["row,column,field,reason"]

    await resources.jobs.retry(job_id)
    assert (await _status(api, import_id))["state"] == "queued"
    await fast_worker.run_until_idle(60)
    done = await _status(api, import_id)
    assert (done["state"], done["rows_created"]) == ("succeeded", 1)


async def test_an_import_without_its_jobs_id_answers_as_its_row_says(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """An import recorded before imports kept their job's id, or whose id names no job,
    or a job that is not its own (a purged job's id reused), stays `queued`, and its
    report still waits for it (409)."""
    resources: Resources = leads_app.state.resources
    rt: LeadsRuntime = leads_app.state.leads
    created = await post_csv(api, b"Nombre,Correo\r\nAna,ana@ejold.es\r\n")
    import_id = int(created.json()["id"])
    job_id = await _job_id(rt, import_id)
    await resources.jobs.cancel(job_id)
    other = await post_csv(api, b"Nombre,Correo\r\nBea,bea@ejold.es\r\n")
    await resources.jobs.cancel(await _job_id(rt, int(other.json()["id"])))
    assert (await _status(api, import_id))["state"] == "failed"
    for unknown in (None, job_id + 1000, await _job_id(rt, int(other.json()["id"]))):
        async with unit_of_work(rt.sessionmaker) as session:
            await session.execute(
                update(LeadImport).where(LeadImport.id == import_id).values(job_id=unknown)
            )
        status = await _status(api, import_id)
        assert (status["state"], status["detail"]) == ("queued", None), unknown
        report = await api.get(f"/v1/leads/import/{import_id}/errors.csv")
        assert (report.status_code, report.json()["code"]) == (409, "import_not_finished")


class OneJobQueue:
    """A queue holding one job (`get` is all `stopped_detail` asks of it)."""

    def __init__(self, job: JobView) -> None:
        self.job = job

    async def get(self, job_id: int) -> JobView | None:
        return self.job if job_id == self.job.id else None


def _failed_job(attempts: list[tuple[str, str | None, str | None]]) -> JobView:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return JobView(
        id=42,
        task=imports.IMPORT_TASK,
        queue=imports.IMPORT_QUEUE,
        status=JobStatus.FAILED,
        priority=0,
        lock=None,
        dedupe_key=None,
        scheduled_at=None,
        created_at=at,
        payload={"import_id": 7},
        attempts=[
            AttemptView(n, at, at, outcome, cls, message, "w", None)
            for n, (outcome, cls, message) in enumerate(attempts, 1)
        ],
    )


async def _detail(rt: LeadsRuntime, job: JobView) -> str | None:
    """What the status of import 7, `running`, its job 42 being `job`, says."""
    one_job = dataclasses.replace(rt, queue=OneJobQueue(job))  # type: ignore[arg-type]
    return await imports_upkeep.stopped_detail(
        one_job, LeadImport(id=7, status="running", job_id=42)
    )


async def test_the_detail_is_one_short_line_counting_the_attempts_since_the_replay(
    leads_app: FastAPI,
) -> None:
    """The detail quotes the last error's first line, cut to 200 characters, never a
    traceback; it counts the attempts of the last replay only (not postponements), and
    says `1 attempt` in the singular."""
    rt: LeadsRuntime = leads_app.state.leads
    failed, retry = AttemptOutcome.FAILED.value, AttemptOutcome.RETRY.value
    long = "x" * 500 + "\nTraceback (most recent call last):\n  File ..."
    detail = await _detail(
        rt,
        _failed_job(
            [
                (retry, "builtins.ValueError", "old"),
                (failed, "builtins.ValueError", "old"),
                (AttemptOutcome.REPLAYED.value, None, None),
                (AttemptOutcome.POSTPONED.value, "cauce.core.jobs.ports.RetryLater", "later"),
                (retry, "builtins.TimeoutError", "slow"),
                (failed, "builtins.RuntimeError", long),
            ]
        ),
    )
    assert detail is not None
    error = "RuntimeError: " + "x" * (
        imports_upkeep.STOPPED_ERROR_CHARS - len("RuntimeError: ") - 1
    )
    assert detail == (
        f"stopped: its job failed after 2 attempts (last error: {error}…); "
        "`cauce jobs retry 42` resumes it where it stopped"
    )
    assert "Traceback" not in detail
    once = await _detail(rt, _failed_job([(failed, None, None)]))
    assert once == (
        "stopped: its job failed after 1 attempt; `cauce jobs retry 42` resumes it where it stopped"
    )


# -- the migration ----------------------------------------------------------------------


def _columns(connection: Connection) -> list[str]:
    return [c["name"] for c in inspect(connection).get_columns("lead_imports")]


def _downgrade_to_0011(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0011")


async def test_migration_0012_adds_the_job_id_and_its_downgrade_keeps_the_reports(
    empty_database_url: str, tmp_path: Path
) -> None:
    """0012 adds a nullable `lead_imports.job_id` (imports already stored have none); its
    downgrade drops it and keeps every import and its report lines (on SQLite a table
    copy would delete them)."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    now = datetime.now(UTC)
    try:
        await upgrade(db, "0011")
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lead_imports (id, status, path, mapping, size_bytes,"
                    " rows_processed, rows_accepted, rows_merged, rows_rejected, created_at)"
                    " VALUES (1, 'running', 'x.csv', '{}', 10, 1, 0, 0, 1, :now)"
                ),
                {"now": now},
            )
            await conn.execute(
                text(
                    'INSERT INTO lead_import_errors (import_id, "row", field, reason)'
                    " VALUES (1, 2, 'email', 'bad')"
                )
            )
        await upgrade(db)
        async with db.engine.connect() as conn:
            assert "job_id" in await conn.run_sync(_columns)
            rows = (await conn.execute(text("SELECT id, job_id FROM lead_imports"))).all()
        assert [tuple(row) for row in rows] == [(1, None)]
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0011)
        async with db.engine.connect() as conn:
            assert "job_id" not in await conn.run_sync(_columns)
            imported = await conn.scalar(text("SELECT count(*) FROM lead_imports"))
            reported = await conn.scalar(text("SELECT count(*) FROM lead_import_errors"))
        assert (imported, reported) == (1, 1)
    finally:
        await db.dispose()

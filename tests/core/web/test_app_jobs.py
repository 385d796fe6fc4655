"""The job engine inside the app: the embedded worker run by the lifespan, /readyz and
/metrics, and keeping the dispatcher's bookkeeping out of traces."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cauce.app import create_app
from cauce.core.db import unit_of_work
from cauce.core.jobs.ports import JobContext, JobStatus, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.observability.logging import configure_logging
from tests.conftest import SettingsFactory
from tests.core.web.conftest import Defer, resources_of

ENGINES = {"sqlite": "embedded", "postgresql": "procrastinate"}


def recording_tasks(seen: list[JsonDict]) -> TaskRegistry:
    """One task, `record`, that remembers its payloads."""
    registry = TaskRegistry()

    @registry.task("record")
    async def record(ctx: JobContext, payload: JsonDict) -> None:
        seen.append(payload)

    return registry


@pytest.fixture
def sqlite_only(backend: str) -> None:
    """The embedded worker only exists on SQLite."""
    if backend != "sqlite":
        pytest.skip("on PostgreSQL jobs run in `cauce worker` processes")


async def wait_for_status(app: FastAPI, job_id: int, status: JobStatus) -> None:
    """Poll the job until it reaches `status` (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            view = await resources_of(app).jobs.get(job_id)
            if view is not None and view.status == status:
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def embedded_app(
    sqlite_only: None, settings_factory: SettingsFactory
) -> AsyncIterator[tuple[FastAPI, list[JsonDict]]]:
    """The app on SQLite with its embedded worker and a `record` task."""
    seen: list[JsonDict] = []
    app = create_app(settings_factory(), tasks=recording_tasks(seen))
    async with LifespanManager(app):
        yield app, seen


async def test_lifespan_worker_runs_deferred_jobs(
    embedded_app: tuple[FastAPI, list[JsonDict]],
) -> None:
    """On SQLite a job deferred in a request's transaction is run by the worker the
    lifespan started, and readiness says so."""
    app, seen = embedded_app
    resources = resources_of(app)
    async with unit_of_work(resources.db.sessionmaker) as session:
        job_id = (await resources.jobs.defer(session, "record", {"lead": 1})).job_id
    await wait_for_status(app, job_id, JobStatus.SUCCEEDED)
    assert seen == [{"lead": 1}]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ready = (await client.get("/readyz")).json()
    assert ready["checks"]["jobs"] == {"status": "ok", "engine": "embedded", "worker": "in-process"}


async def test_readiness_fails_when_the_dispatcher_stopped(
    embedded_app: tuple[FastAPI, list[JsonDict]],
) -> None:
    """If the embedded dispatcher is gone, /readyz answers 503 naming `jobs`."""
    app, _ = embedded_app
    worker = resources_of(app).job_worker
    assert worker is not None
    await worker.stop()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["jobs"]["status"] == "failed"
    assert "jobs" in response.json()["detail"]


async def test_shutdown_releases_a_running_job(
    sqlite_only: None, settings_factory: SettingsFactory
) -> None:
    """Stopping the app lets the embedded worker give up a job that outlives the grace
    period: it is back in `todo` with its attempt marked lost, never left `doing`."""
    registry = TaskRegistry()
    started = asyncio.Event()

    @registry.task("hang")
    async def hang(ctx: JobContext, payload: JsonDict) -> None:
        started.set()
        await asyncio.sleep(60)

    app = create_app(settings_factory(jobs={"graceful_shutdown_seconds": 0.2}), tasks=registry)
    async with LifespanManager(app):
        resources = resources_of(app)
        async with unit_of_work(resources.db.sessionmaker) as session:
            job_id = (await resources.jobs.defer(session, "hang", {})).job_id
        async with asyncio.timeout(10):
            await started.wait()
        queue = resources.jobs
    view = await queue.get(job_id)
    assert view is not None
    assert view.status == JobStatus.TODO
    assert [a.outcome for a in view.attempts] == ["lost"]


async def test_readyz_names_the_engine(
    api: httpx.AsyncClient, backend: str, jobs_app: FastAPI
) -> None:
    """/readyz reports the job engine of the database in use, and where its worker runs."""
    body = (await api.get("/readyz")).json()
    worker = {"sqlite": "off", "postgresql": "separate"}[backend]
    assert body == {
        "status": "ready",
        "checks": {
            "database": "ok",
            "jobs": {"status": "ok", "engine": ENGINES[backend], "worker": worker},
            "disk": "ok",
        },
    }


async def test_metrics_expose_job_depth(
    api: httpx.AsyncClient, defer: Defer, jobs_app: FastAPI
) -> None:
    """A scrape refreshes queue depth by state and the oldest waiting age from the
    database, and counts deferred jobs by task."""
    first = await defer("deliver")
    await defer("deliver")
    await defer("other")
    await resources_of(jobs_app).jobs.cancel(first)
    body = (await api.get("/metrics")).text
    assert 'cauce_jobs_queue_depth{state="todo"} 2.0' in body
    assert 'cauce_jobs_queue_depth{state="cancelled"} 1.0' in body
    assert 'cauce_jobs_queue_depth{state="failed"} 0.0' in body
    assert 'cauce_jobs_deferred_total{task="deliver"} 2.0' in body
    oldest = next(
        line for line in body.splitlines() if line.startswith("cauce_jobs_oldest_waiting_seconds ")
    )
    assert 0.0 <= float(oldest.split()[1]) < 60


async def test_metrics_answer_when_the_refresh_fails(
    api: httpx.AsyncClient, jobs_app: FastAPI
) -> None:
    """A failing gauge refresh leaves the previous values; the scrape still answers."""

    async def broken() -> None:
        raise ConnectionRefusedError("database down")

    resources_of(jobs_app).before_scrape[:] = [broken]
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert "cauce_jobs_queue_depth" in response.text


async def test_dispatcher_polling_is_not_traced(
    sqlite_only: None, settings_factory: SettingsFactory
) -> None:
    """With tracing on, the embedded dispatcher's polls export no spans; a job does."""
    exporter = InMemorySpanExporter()
    seen: list[JsonDict] = []
    app = create_app(
        settings_factory(jobs={"poll_seconds": 0.02}),
        span_exporter=exporter,
        tasks=recording_tasks(seen),
    )
    async with LifespanManager(app):
        exporter.clear()
        await asyncio.sleep(0.3)  # about 15 polls
        assert exporter.get_finished_spans() == ()
        resources = resources_of(app)
        async with unit_of_work(resources.db.sessionmaker) as session:
            job_id = (await resources.jobs.defer(session, "record", {})).job_id
        await wait_for_status(app, job_id, JobStatus.SUCCEEDED)
    names = [s.name for s in exporter.get_finished_spans()]
    assert "job record" in names


def test_procrastinate_logs_only_warnings(settings_factory: SettingsFactory) -> None:
    """procrastinate's per-job INFO lines are silenced; its warnings still come through."""
    configure_logging(settings_factory(log={"level": "info", "format": "json"}))
    assert logging.getLogger("procrastinate").getEffectiveLevel() == logging.WARNING
    configure_logging(settings_factory(log={"level": "error", "format": "json"}))
    assert logging.getLogger("procrastinate").getEffectiveLevel() == logging.ERROR

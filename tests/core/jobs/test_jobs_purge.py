"""Retention of finished jobs: `core.jobs_purge` and `cauce jobs purge` delete the jobs
that finished longer ago than their retention, with their attempts, on both engines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import Result

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.config import load_settings
from cauce.core.db import Database, unit_of_work
from cauce.core.jobs.builtin import PROBE_TASK, register_core_tasks
from cauce.core.jobs.models import EmbeddedJob, JobAttempt
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import (
    JobContext,
    JobFilter,
    JobQueue,
    JobStatus,
    JsonDict,
    PermanentJobError,
    Retention,
)
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.retention import PURGE_TASK, register_jobs_purge, retention_from
from tests.conftest import SettingsFactory, make_settings
from tests.core.jobs.conftest import KitFactory
from tests.core.jobs.kits import FakeClock, Kit
from tests.test_cli_jobs import cli_in_process, restore_logging

__all__ = ["restore_logging"]  # the fixture, shared with test_cli_jobs

RETENTION = Retention(succeeded=timedelta(days=7), failed=timedelta(days=30), chunk=3)
EVERY_SECOND = "* * * * * *"


@pytest.fixture
def clock() -> FakeClock:
    """The embedded engine's clock stopped at the real time, so that jobs aged here are
    as old for the engines, the app and the CLI (all of which read the real clock)."""
    return FakeClock(datetime.now(UTC))


def purge_registry(release: asyncio.Event) -> TaskRegistry:
    """`ok` succeeds, `boom` fails for good, `again` fails and waits hours for its retry,
    `hold` runs until `release` is set."""
    registry = TaskRegistry()

    @registry.task("ok")
    async def ok(ctx: JobContext, payload: JsonDict) -> None:
        return None

    @registry.task("boom")
    async def boom(ctx: JobContext, payload: JsonDict) -> None:
        raise PermanentJobError("the CRM refused the record")

    # Full jitter over a day: the retry waits hours (seeded rng), far beyond the test.
    @registry.task("again", retry=RetryPolicy(base_seconds=86_400, cap_seconds=86_400))
    async def again(ctx: JobContext, payload: JsonDict) -> None:
        raise RuntimeError("the CRM timed out")

    @registry.task("hold")
    async def hold(ctx: JobContext, payload: JsonDict) -> None:
        await release.wait()

    return registry


async def age(
    sessionmaker: async_sessionmaker[AsyncSession], job_ids: Iterable[int], days: int
) -> None:
    """Move the jobs' creation and finish `days` into the past, as each engine keeps them
    (SQLite: the job's columns; PostgreSQL: procrastinate's events)."""
    ids = list(job_ids)
    async with unit_of_work(sessionmaker) as session:
        if (await session.connection()).dialect.name == "sqlite":
            for job in (
                await session.scalars(select(EmbeddedJob).where(EmbeddedJob.id.in_(ids)))
            ).all():
                job.created_at -= timedelta(days=days)
                job.updated_at -= timedelta(days=days)
        else:
            await session.execute(
                text(
                    "UPDATE procrastinate_events SET at = at - make_interval(days => :days)"
                    " WHERE job_id = ANY(:ids)"
                ),
                {"days": days, "ids": ids},
            )


async def defer_all(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    tasks: Iterable[str],
    *,
    later: Iterable[int] = (),
) -> list[int]:
    """Defer one job per task name, in order (ids grow with it), in one transaction; the
    jobs at the positions in `later` are due in a day."""
    postponed = set(later)
    async with unit_of_work(sessionmaker) as session:
        return [
            (
                await queue.defer(
                    session, task, {}, delay_seconds=86_400 if i in postponed else None
                )
            ).job_id
            for i, task in enumerate(tasks)
        ]


async def outcomes(queue: JobQueue, job_id: int) -> list[str]:
    """The outcomes of a job's attempts, oldest first."""
    view = await queue.get(job_id)
    assert view is not None
    return [a.outcome for a in view.attempts]


async def job_ids(queue: JobQueue) -> set[int]:
    """Every job id left."""
    return {view.id for view in await queue.list(JobFilter(), limit=1000)}


async def attempt_job_ids(db: Database) -> set[int]:
    """The jobs that still have rows in the attempts log."""
    async with db.sessionmaker() as session:
        return set((await session.scalars(select(JobAttempt.job_id))).all())


async def wait_for(queue: JobQueue, expected: dict[int, JobStatus], seconds: float = 20) -> None:
    """Wait until every job in `expected` is in its state."""
    async with asyncio.timeout(seconds):
        while True:
            views = {job_id: await queue.get(job_id) for job_id in expected}
            if all(v is not None and v.status == expected[i] for i, v in views.items()):
                return
            await asyncio.sleep(0.05)


def purged(kit: Kit, status: str) -> float | None:
    """The purge counter's value for `status`."""
    return kit.metrics.registry.get_sample_value("cauce_jobs_purged_total", {"status": status})


async def test_finished_jobs_past_their_retention_go_and_everything_else_stays(
    make_kit: KitFactory, db: Database
) -> None:
    """Succeeded jobs older than 7 days and failed or cancelled ones older than 30 go,
    with their attempts; younger finished jobs, and jobs waiting, waiting for a retry
    or running stay, however old; a dry run counts the same and deletes nothing."""
    release = asyncio.Event()
    kit = await make_kit(purge_registry(release))
    # Oldest first, as in life: ids grow with creation time.
    plan = [
        ("cancelled-40d", "ok", 40),
        ("todo-40d", "ok", 40),
        ("failed-31d", "boom", 31),
        ("retrying-31d", "again", 31),
        ("succeeded-8d", "ok", 8),
        ("doing-8d", "hold", 8),
        ("failed-8d", "boom", 8),
        ("cancelled-8d", "ok", 8),
        ("succeeded-1d", "ok", 1),
        ("succeeded-now", "ok", 0),
    ]
    ids = dict(
        zip(
            [name for name, _, _ in plan],
            await defer_all(db.sessionmaker, kit.queue, [task for _, task, _ in plan], later=[1]),
            strict=True,
        )
    )
    await kit.queue.cancel(ids["cancelled-40d"])
    await kit.queue.cancel(ids["cancelled-8d"])
    await kit.start()
    try:
        await wait_for(
            kit.queue,
            {
                ids["failed-31d"]: JobStatus.FAILED,
                ids["failed-8d"]: JobStatus.FAILED,
                ids["succeeded-8d"]: JobStatus.SUCCEEDED,
                ids["succeeded-1d"]: JobStatus.SUCCEEDED,
                ids["succeeded-now"]: JobStatus.SUCCEEDED,
                ids["doing-8d"]: JobStatus.DOING,
            },
        )
        async with asyncio.timeout(20):
            while True:
                if await outcomes(kit.queue, ids["retrying-31d"]) == ["retry"]:
                    break
                await asyncio.sleep(0.05)
        for name, _, days in plan:
            if days:
                await age(db.sessionmaker, [ids[name]], days)
        before = await job_ids(kit.queue)

        dry = await kit.queue.purge(RETENTION, dry_run=True)
        assert dry.dry_run
        assert dict(dry.deleted) == {"succeeded": 1, "failed": 1, "cancelled": 1}
        assert dry.attempts == 2  # the cancelled job never ran
        assert await job_ids(kit.queue) == before
        assert purged(kit, "succeeded") == 0

        result = await kit.queue.purge(RETENTION)
        assert dict(result.deleted) == {"succeeded": 1, "failed": 1, "cancelled": 1}
        assert result.attempts == 2
        gone = {ids["succeeded-8d"], ids["failed-31d"], ids["cancelled-40d"]}
        assert await job_ids(kit.queue) == before - gone
        assert {ids["retrying-31d"], ids["doing-8d"], ids["todo-40d"]} <= before - gone
        assert not gone & await attempt_job_ids(db)
        assert {ids["retrying-31d"], ids["failed-8d"], ids["doing-8d"]} <= await attempt_job_ids(db)
        assert [purged(kit, s) for s in ("succeeded", "failed", "cancelled")] == [1, 1, 1]

        again = await kit.queue.purge(RETENTION)
        assert again.total == 0
    finally:
        release.set()


async def test_the_purge_goes_window_by_window_and_stops_at_recent_jobs(
    make_kit: KitFactory, db: Database
) -> None:
    """With 5 jobs per window, 12 old succeeded jobs go in three windows, and the walk
    stops at the first window of recent jobs instead of reading them all."""
    registry = TaskRegistry()
    register_core_tasks(registry)
    kit = await make_kit(registry)
    ids = await defer_all(db.sessionmaker, kit.queue, [PROBE_TASK] * 30)
    await kit.drain()
    old, recent = ids[:12], ids[12:]
    await age(db.sessionmaker, old, 10)

    result = await kit.queue.purge(Retention(timedelta(days=7), timedelta(days=30), chunk=5))

    assert result.deleted["succeeded"] == 12
    assert result.attempts == 12
    # Windows (0, 5], (5, 10], (10, 15]: the last reaches recent jobs, and the walk ends
    # there, three windows short of the table's end.
    assert result.chunks == 3
    assert await job_ids(kit.queue) == set(recent)
    assert await attempt_job_ids(db) == set(recent)


async def test_the_newest_job_is_kept_on_sqlite(
    make_kit: KitFactory, db: Database, backend: str
) -> None:
    """On SQLite the newest job stays whatever its age (SQLite would reuse its id);
    PostgreSQL never reuses ids and purges it like any other."""
    registry = TaskRegistry()
    register_core_tasks(registry)
    kit = await make_kit(registry)
    first, newest = await defer_all(db.sessionmaker, kit.queue, [PROBE_TASK] * 2)
    await kit.drain()
    await age(db.sessionmaker, [first, newest], 10)

    result = await kit.queue.purge(RETENTION)

    assert await job_ids(kit.queue) == ({newest} if backend == "sqlite" else set())
    assert result.total == (1 if backend == "sqlite" else 2)


async def test_an_empty_table_purges_nothing(make_kit: KitFactory) -> None:
    """A purge of an empty job table deletes nothing, in one window."""
    kit = await make_kit(TaskRegistry())
    result = await kit.queue.purge(RETENTION)
    assert (result.total, result.attempts, result.chunks) == (0, 0, 1)


async def wait_until_gone(queue: JobQueue, job_id: int, seconds: float = 20) -> None:
    """Wait until job `job_id` is deleted."""
    async with asyncio.timeout(seconds):
        while True:
            if await queue.get(job_id) is None:
                return
            await asyncio.sleep(0.1)


async def test_the_schedule_runs_the_purge_in_the_app_workers(
    backend: str, settings_factory: SettingsFactory
) -> None:
    """The app registers `core.jobs_purge` on `jobs.purge_cron`, and its worker (the
    embedded one on SQLite, a `cauce worker` on PostgreSQL) runs it: an old succeeded
    job is gone without anyone asking, a recent one stays."""
    app = create_app(settings_factory(jobs={"purge_cron": EVERY_SECOND}))
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        assert PURGE_TASK in resources.tasks
        assert (PURGE_TASK, EVERY_SECOND) in [(s.task, s.cron) for s in resources.tasks.schedules]
        worker = job_worker_for(resources) if backend == "postgresql" else None
        if worker is not None:
            await worker.start()
        try:
            old, recent = await defer_all(
                resources.db.sessionmaker, resources.jobs, [PROBE_TASK] * 2
            )
            await wait_for(resources.jobs, {old: JobStatus.SUCCEEDED, recent: JobStatus.SUCCEEDED})
            await age(resources.db.sessionmaker, [old], 8)
            await wait_until_gone(resources.jobs, old)
            view = await resources.jobs.get(recent)
            assert view is not None
            assert view.status == JobStatus.SUCCEEDED
        finally:
            if worker is not None:
                await worker.stop()


async def test_purge_cron_off_registers_the_task_without_a_schedule(tmp_path: Path) -> None:
    """With `jobs.purge_cron` off the purge task exists (for `cauce jobs purge` and a
    deferral by hand) but nothing schedules it."""
    app = create_app(make_settings(tmp_path, jobs={"purge_cron": "off", "embedded_worker": False}))
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        assert PURGE_TASK in resources.tasks
        assert PURGE_TASK not in [s.task for s in resources.tasks.schedules]

    registry = TaskRegistry()
    register_jobs_purge(registry, RETENTION, None)
    assert PURGE_TASK in registry
    assert registry.schedules == []


def test_the_purge_settings_and_their_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Succeeded jobs are kept 7 days, failed ones 30, purged hourly 5,000 at a time;
    `CAUCE_JOBS__PURGE_CRON=off` (or empty, or null) turns the schedule off; a cron that
    is not one, or a retention that is not positive, stops start-up."""
    jobs = make_settings(tmp_path).jobs
    assert retention_from(jobs) == Retention(timedelta(days=7), timedelta(days=30), 5000)
    assert jobs.purge_cron == "47 * * * *"
    monkeypatch.setenv("CAUCE_SECRET_KEY", "test-secret-key-0123456789abcdef0123456789")
    monkeypatch.setenv("CAUCE_DATA_DIR", str(tmp_path))
    for off in ("off", "", "null", "OFF"):
        monkeypatch.setenv("CAUCE_JOBS__PURGE_CRON", off)
        assert load_settings().jobs.purge_cron is None
    monkeypatch.setenv("CAUCE_JOBS__PURGE_CRON", "0 3 * * *")
    monkeypatch.setenv("CAUCE_JOBS__RETENTION_SUCCEEDED_DAYS", "1.5")
    loaded = load_settings().jobs
    assert (loaded.purge_cron, loaded.retention_succeeded_days) == ("0 3 * * *", 1.5)
    with pytest.raises(ValueError, match="not a cron expression"):
        make_settings(tmp_path, jobs={"purge_cron": "every hour"})
    with pytest.raises(ValueError, match="greater than 0"):
        make_settings(tmp_path, jobs={"retention_failed_days": 0})
    with pytest.raises(ValueError, match="positive"):
        Retention(timedelta(0), timedelta(days=1))


@pytest.fixture
def cauce(tmp_path: Path, database_url: str, restore_logging: None) -> Callable[..., Result]:
    """Run `cauce ARGS` in-process on this test's database, its info lines logged."""
    return cli_in_process(tmp_path, database_url, "info")


async def test_cauce_jobs_purge(
    make_kit: KitFactory, db: Database, cauce: Callable[..., Result]
) -> None:
    """`cauce jobs purge --dry-run` says what would go and deletes nothing; `cauce jobs
    purge` deletes it and logs one `jobs.purged` line with the counts."""
    registry = TaskRegistry()
    register_core_tasks(registry)
    kit = await make_kit(registry)
    old, young, newest = await defer_all(db.sessionmaker, kit.queue, [PROBE_TASK] * 3)
    await kit.drain()
    await age(db.sessionmaker, [old], 8)

    # The CLI runs its own event loop: off this one's thread.
    dry = await asyncio.to_thread(cauce, "jobs", "purge", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "would delete 1 job (0 cancelled, 0 failed, 1 succeeded) and 1 attempt" in dry.stdout
    assert await job_ids(kit.queue) == {old, young, newest}

    done = await asyncio.to_thread(cauce, "jobs", "purge")
    assert done.exit_code == 0, done.stderr
    assert "deleted 1 job (0 cancelled, 0 failed, 1 succeeded) and 1 attempt" in done.stdout
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line["event"] == "jobs.purged"]
    assert len(logged) == 1
    assert {k: logged[0][k] for k in ("succeeded", "failed", "cancelled", "attempts")} == {
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
        "attempts": 1,
    }
    assert await job_ids(kit.queue) == {young, newest}

"""Replay of cancelled jobs, replay against a held dedupe key, unknown tasks, the probe task
and the engine factory, on both engines."""

from __future__ import annotations

import logging

import pytest

from cauce.core.db import Database, unit_of_work
from cauce.core.errors import Conflict
from cauce.core.jobs.builtin import PROBE_TASK, register_core_tasks
from cauce.core.jobs.factory import build_job_queue
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JobFilter, JobStatus, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from tests.core.jobs.conftest import KitFactory
from tests.core.jobs.test_contract import outcomes

ONCE = RetryPolicy(max_attempts=1)


def syncing_registry(runs: list[int]) -> TaskRegistry:
    """A `sync` task that fails when its payload says so, in one attempt."""
    registry = TaskRegistry()

    @registry.task("sync", retry=ONCE)
    async def sync(ctx: JobContext, payload: JsonDict) -> None:
        if payload.get("fail"):
            raise RuntimeError("the CRM refused")
        runs.append(ctx.job_id)

    return registry


async def test_cancelled_job_can_be_replayed(make_kit: KitFactory, db: Database) -> None:
    """A cancelled job, replayed one by one or in bulk, runs with a replay marker first."""
    runs: list[int] = []
    kit = await make_kit(syncing_registry(runs))
    async with unit_of_work(db.sessionmaker) as session:
        one = (await kit.queue.defer(session, "sync", {})).job_id
        two = (await kit.queue.defer(session, "sync", {})).job_id
    await kit.queue.cancel(one)
    await kit.queue.cancel(two)
    replayed = await kit.queue.retry(one)
    assert replayed.status == JobStatus.TODO
    assert await kit.queue.retry_many(JobFilter(status=JobStatus.CANCELLED, task="sync")) == 1
    await kit.drain()
    assert sorted(runs) == sorted([one, two])
    for job_id in (one, two):
        view = await kit.queue.get(job_id)
        assert view is not None
        assert view.status == JobStatus.SUCCEEDED
        assert outcomes(view) == ["replayed", "succeeded"]
    with pytest.raises(Conflict):
        await kit.queue.retry(one)


async def test_bulk_replay_refuses_other_states(make_kit: KitFactory) -> None:
    """Bulk replay acts on failed or cancelled jobs only."""
    kit = await make_kit(syncing_registry([]))
    with pytest.raises(ValueError, match="failed or cancelled"):
        await kit.queue.retry_many(JobFilter(status=JobStatus.TODO))


async def test_replay_respects_a_held_dedupe_key(make_kit: KitFactory, db: Database) -> None:
    """A failed job is not replayed while another job with its dedupe key waits: the single
    replay answers Conflict, bulk replay skips it; once the key is free, replay works."""
    kit = await make_kit(syncing_registry([]))
    async with unit_of_work(db.sessionmaker) as session:
        failed = (await kit.queue.defer(session, "sync", {"fail": True}, dedupe_key="crm:1")).job_id
    await kit.drain()
    async with unit_of_work(db.sessionmaker) as session:
        waiting = (await kit.queue.defer(session, "sync", {}, dedupe_key="crm:1")).job_id
    assert waiting != failed
    with pytest.raises(Conflict, match="dedupe key"):
        await kit.queue.retry(failed)
    assert await kit.queue.retry_many(JobFilter(task="sync")) == 0
    view = await kit.queue.get(failed)
    assert view is not None
    assert view.status == JobStatus.FAILED
    assert outcomes(view) == ["failed"]

    await kit.queue.cancel(waiting)
    assert (await kit.queue.retry(failed)).status == JobStatus.TODO


async def test_unknown_task_fails_with_its_attempt_recorded(
    make_kit: KitFactory, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A job naming a task this worker does not know fails for good, and its attempt row
    names the missing task; procrastinate adds no error line of its own."""
    kit = await make_kit(syncing_registry([]))
    other = TaskRegistry()

    @other.task("ghost")
    async def ghost(ctx: JobContext, payload: JsonDict) -> None:
        raise AssertionError("never runs: the worker does not know this task")

    caplog.set_level(logging.INFO)
    deferrer = build_job_queue(db, other, JobMetrics())
    async with unit_of_work(db.sessionmaker) as session:
        job_id = (await deferrer.defer(session, "ghost", {"n": 1})).job_id
    await kit.drain()
    view = await kit.queue.get(job_id)
    assert view is not None
    assert view.status == JobStatus.FAILED
    assert outcomes(view) == ["failed"]
    attempt = view.attempts[0]
    assert attempt.error_class == "cauce.core.jobs.registry.UnknownTask"
    assert attempt.error_message is not None
    assert "ghost" in attempt.error_message
    assert not [r for r in caplog.records if r.name.startswith("procrastinate") and r.levelno >= 40]


async def test_probe_succeeds_or_fails_as_asked(make_kit: KitFactory, db: Database) -> None:
    """The core probe task succeeds, fails on request, and refuses a bad sleep, each in
    one attempt."""
    registry = TaskRegistry()
    register_core_tasks(registry)
    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        ok = (await kit.queue.defer(session, PROBE_TASK, {"sleep_seconds": 0.01})).job_id
        fail = (await kit.queue.defer(session, PROBE_TASK, {"fail": True})).job_id
        bad = (await kit.queue.defer(session, PROBE_TASK, {"sleep_seconds": "soon"})).job_id
    await kit.drain()
    views = {job_id: await kit.queue.get(job_id) for job_id in (ok, fail, bad)}
    assert {k: v.status for k, v in views.items() if v} == {
        ok: JobStatus.SUCCEEDED,
        fail: JobStatus.FAILED,
        bad: JobStatus.FAILED,
    }
    fail_view, bad_view = views[fail], views[bad]
    assert fail_view is not None
    assert bad_view is not None
    assert fail_view.attempts[0].error_class == "cauce.core.jobs.builtin.ProbeFailed"
    assert bad_view.attempts[0].error_class == "cauce.core.jobs.ports.PermanentJobError"


async def test_factory_picks_the_engine_by_dialect(db: Database, backend: str) -> None:
    """SQLite gets the embedded engine, PostgreSQL procrastinate; both answer `check`."""
    queue = build_job_queue(db, TaskRegistry(), JobMetrics())
    assert queue.engine == {"sqlite": "embedded", "postgresql": "procrastinate"}[backend]
    await queue.check()


def test_registry_copy_is_independent() -> None:
    """Adding to a copy of a registry leaves the original as it was."""
    original = TaskRegistry()
    register_core_tasks(original)
    original.schedule("0 * * * *", PROBE_TASK)
    clone = original.copy()

    @clone.task("extra")
    async def extra(ctx: JobContext, payload: JsonDict) -> None:
        return None

    clone.schedule("*/5 * * * *", "extra")
    assert set(original.tasks) == {PROBE_TASK}
    assert set(clone.tasks) == {PROBE_TASK, "extra"}
    assert len(original.schedules) == 1
    assert len(clone.schedules) == 2

"""A deduplicated job that must run again while a newer one waits with the same key."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from cauce.core.db import Database, unit_of_work
from cauce.core.jobs.ports import JobContext, JobFilter, JobStatus, JsonDict, RetryLater
from cauce.core.jobs.registry import TaskRegistry
from tests.core.jobs.conftest import KitFactory
from tests.core.jobs.kits import FakeClock


async def test_postponed_job_and_newer_waiting_job_both_run(
    make_kit: KitFactory, db: Database, clock: FakeClock, backend: str
) -> None:
    """The running job asks to run later after a twin was deferred: both wait, both run."""
    registry = TaskRegistry()
    runs: list[int] = []
    twin: dict[str, int] = {}

    @registry.task("deliver")
    async def deliver(ctx: JobContext, payload: JsonDict) -> None:
        runs.append(ctx.job_id)
        if "id" not in twin:
            # While this attempt runs, a request defers the same work again.
            async with unit_of_work(db.sessionmaker) as session:
                result = await ctx.queue_port.defer(session, "deliver", {}, dedupe_key="crm:a")
                twin["id"] = result.job_id
            raise RetryLater(clock() + timedelta(seconds=1), "throttled")

    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        first = (await kit.queue.defer(session, "deliver", {}, dedupe_key="crm:a")).job_id
    await kit.drain()
    clock.current += timedelta(seconds=2)
    if backend == "postgresql":  # procrastinate follows the database's clock
        await asyncio.sleep(1.2)
    await kit.drain()
    assert twin["id"] != first
    assert sorted(set(runs)) == sorted({first, twin["id"]})
    done = await kit.queue.list(JobFilter(status=JobStatus.SUCCEEDED))
    assert {job.id for job in done} == {first, twin["id"]}


async def test_twin_deferred_while_the_job_goes_back_to_todo(
    make_kit: KitFactory, db: Database, clock: FakeClock, backend: str
) -> None:
    """PostgreSQL moves a postponed job back to `todo` in a later transaction than the one
    that gives up its dedupe key: a twin deferred in between must not leave the job stuck
    `doing` (a unique violation on the one-waiting-job index)."""
    if backend != "postgresql":
        return  # the embedded engine gives up the key in the statement that moves the job
    from cauce.core.jobs.procrastinate_worker import ProcrastinateWorker

    registry = TaskRegistry()
    runs: list[int] = []
    twin: dict[str, int] = {}

    @registry.task("deliver")
    async def deliver(ctx: JobContext, payload: JsonDict) -> None:
        runs.append(ctx.job_id)
        if len(runs) == 1:
            raise RetryLater(clock() + timedelta(seconds=1), "throttled")

    kit = await make_kit(registry)
    original = ProcrastinateWorker._yield_dedupe_key

    async def yield_then_twin(session: object, job_id: int) -> None:
        await original(session, job_id)  # type: ignore[arg-type]
        async with unit_of_work(db.sessionmaker) as other:
            twin["id"] = (await kit.queue.defer(other, "deliver", {}, dedupe_key="crm:a")).job_id

    kit.worker._yield_dedupe_key = yield_then_twin  # type: ignore[attr-defined]
    async with unit_of_work(db.sessionmaker) as session:
        first = (await kit.queue.defer(session, "deliver", {}, dedupe_key="crm:a")).job_id
    await kit.drain()
    await asyncio.sleep(1.2)
    await kit.drain()
    done = await kit.queue.list(JobFilter(status=JobStatus.SUCCEEDED))
    assert {job.id for job in done} == {first, twin["id"]}
    assert not await kit.queue.list(JobFilter(status=JobStatus.DOING))

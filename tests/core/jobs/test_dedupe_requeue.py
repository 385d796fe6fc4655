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

"""SQLite side of benchmarks/jobs_throughput.py: the embedded engine, in-process.

Same method as the PostgreSQL rounds (see _jobs_pg.py): defer N jobs one per unit of
work into the queue `hold` (sequentially: SQLite has one writer), start the
`EmbeddedWorker` that `cauce serve` runs (built by `cauce.core.jobs.factory`, concurrency
10, serving `bench`), let it go idle, then one UPDATE moves the jobs to `bench` and wakes
the dispatcher. Drain time runs from just before that UPDATE to the last job's
`updated_at` (both on the process's clock). With `profile`, the drain is sampled
(_jobs_profile.Sampler) and the report comes back in `EngineRound.profiles`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import func, select, update

from _jobs_pg import HOLD, QUEUE, TASK, EngineRound, noop_registry
from _jobs_profile import Sampler, report
from cauce.core.config import LogSettings, Settings
from cauce.core.db import Database, create_database, unit_of_work, utcnow
from cauce.core.db.migrate import upgrade
from cauce.core.jobs.embedded import EmbeddedJobQueue
from cauce.core.jobs.factory import build_job_worker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.models import EmbeddedJob, JobAttempt


def sqlite_settings(data_dir: Path) -> Settings:
    """Default embedded settings on a throwaway data dir."""
    return Settings(data_dir=data_dir, log=LogSettings(level="warning", format="json"))


async def fresh_sqlite(data_dir: Path) -> Database:
    """A migrated SQLite database in `data_dir`, with production pragmas."""
    db = create_database(sqlite_settings(data_dir))
    await upgrade(db)
    return db


def _as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


async def _drained(db: Database, n: int) -> None:
    """Wait until `n` jobs succeeded (a read every 0.1 s; the time is taken from the rows)."""
    done = select(func.count()).where(EmbeddedJob.status == "succeeded")
    deadline = time.monotonic() + max(60.0, n / 20)
    while True:
        async with db.sessionmaker() as session:
            if int(await session.scalar(done) or 0) >= n:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("embedded jobs not drained in time")
        await asyncio.sleep(0.1)


async def sqlite_round(
    n: int,
    *,
    concurrency: int,
    tracer_provider: TracerProvider | None,
    profile: bool = False,
) -> EngineRound:
    """Defer, then drain `n` no-op jobs with the embedded engine (reported like a PG round)."""
    load_before = os.getloadavg()[0]
    profiles: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        settings = sqlite_settings(Path(tmp))
        db = await fresh_sqlite(Path(tmp))
        registry = noop_registry()
        metrics = JobMetrics()
        queue = EmbeddedJobQueue(db.sessionmaker, registry, metrics)
        try:
            start = time.perf_counter()
            for i in range(n):
                async with unit_of_work(db.sessionmaker) as session:
                    await queue.defer(session, TASK, {"n": i}, queue=HOLD)
            defer_s = time.perf_counter() - start

            worker = build_job_worker(
                queue,
                db,
                registry,
                metrics,
                settings.jobs,
                tracer_provider=tracer_provider,
                concurrency=concurrency,
                queues=[QUEUE],
            )
            await worker.start()
            sampler = Sampler() if profile else None
            try:
                await asyncio.sleep(0.5)  # idle, like the PG workers before release
                with sampler or contextlib.nullcontext():
                    cpu_before = time.process_time()
                    released_at = utcnow()
                    async with unit_of_work(db.sessionmaker) as session:
                        await session.execute(
                            update(EmbeddedJob).where(EmbeddedJob.queue == HOLD).values(queue=QUEUE)
                        )
                    queue.wakeup.set()
                    await _drained(db, n)
                    cpu = time.process_time() - cpu_before
            finally:
                await worker.stop()
            if sampler is not None:
                profiles.append(report(sampler, "benchmark process (SQLite engine)", n))
            async with db.sessionmaker() as session:
                last = await session.scalar(
                    select(func.max(EmbeddedJob.updated_at)).where(
                        EmbeddedJob.status == "succeeded"
                    )
                )
                attempts = await session.scalar(
                    select(func.count()).where(JobAttempt.outcome == "succeeded")
                )
            if attempts != n:
                raise RuntimeError(f"{attempts} succeeded attempts, expected {n}")
            assert last is not None
            finished = _as_datetime(last)
            if finished.tzinfo is None:
                finished = finished.replace(tzinfo=released_at.tzinfo)
            drain_s = (finished - released_at).total_seconds()
        finally:
            await db.dispose()
    # One process does everything: its CPU is the "worker" CPU; there is no server.
    return EngineRound(
        "sqlite",
        1,
        n,
        defer_s,
        drain_s,
        cpu,
        0.0,
        load=(load_before, os.getloadavg()[0]),
        profiles=profiles,
    )

"""The procrastinate engine with several workers on a real PostgreSQL.

Worker processes run `tests/core/jobs/pg_worker_proc.py`. Each test bounds itself with
`asyncio.timeout` and kills whatever processes it started on the way out. The bounds
only catch a hang: they are several times what a loaded two-core machine needs (there
the 5,000 jobs took 100 s, the process starts 10 s and more).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from cauce.core.db import unit_of_work
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobContext, JobFilter, JobStatus, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue, libpq_conninfo
from cauce.core.jobs.procrastinate_worker import ProcrastinateWorker
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner
from tests.core.jobs.pg_worker_proc import RUNS_DDL, build_registry

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[3]
HANG = 180.0  # seconds: a test still waiting then is stuck, not slow
DRAIN_HANG = 450.0
Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Worker processes only exist on PostgreSQL: no SQLite variant of these tests."""
    return str(request.param)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """This test's database, with the table the test tasks count their runs in."""
    eng = create_async_engine(database_url)
    async with eng.begin() as conn:
        await conn.execute(text(RUNS_DDL))
    yield eng
    await eng.dispose()


@pytest.fixture
def queue(engine: AsyncEngine, database_url: str) -> ProcrastinateJobQueue:
    """The queue the test defers with and inspects jobs through."""
    return ProcrastinateJobQueue(
        async_sessionmaker(engine, expire_on_commit=False),
        build_registry(),
        JobMetrics(),
        conninfo=libpq_conninfo(database_url),
    )


@pytest.fixture
def spawn(database_url: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start worker processes; any still alive at the end are killed."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**options: float) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "tests.core.jobs.pg_worker_proc", "--url", database_url]
        for name, value in options.items():
            cmd += [f"--{name}", str(value)]
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    """One value from the database."""
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def wait_for(check: Callable[[], Any], every: float = 0.1) -> Any:
    """Poll `check` (a coroutine function) until it returns something truthy."""
    while True:
        if value := await check():
            return value
        await asyncio.sleep(every)


async def workers_registered(engine: AsyncEngine, count: int) -> None:
    """Wait until `count` procrastinate workers have registered (they are claiming)."""
    await wait_for(lambda: _at_least(engine, "SELECT count(*) FROM procrastinate_workers", count))


async def _at_least(engine: AsyncEngine, sql: str, count: int) -> bool:
    return int(await scalar(engine, sql)) >= count


async def exited(proc: subprocess.Popen[bytes]) -> int:
    """Wait for a process to exit without blocking the event loop."""
    return int(await asyncio.to_thread(proc.wait))


async def test_killed_worker_job_runs_again_on_another_process(
    engine: AsyncEngine, queue: ProcrastinateJobQueue, spawn: Spawn
) -> None:
    """A job whose worker is SIGKILLed mid-attempt runs again on another process within
    30 s and succeeds once; the attempts table keeps the lost attempt and the good one."""
    fast = {"heartbeat": 1, "stalled": 4, "sweep": 1, "concurrency": 2}
    procs = [spawn(**fast), spawn(**fast)]
    async with asyncio.timeout(HANG):
        await workers_registered(engine, 2)
        async with unit_of_work(queue.sessionmaker) as session:
            job_id = (await queue.defer(session, "slow", {"first": 60, "then": 0.2})).job_id

        async def running_worker() -> str | None:
            value = await scalar(
                engine,
                "SELECT worker_id FROM job_attempts WHERE job_id = :id AND outcome = 'running'",
                id=job_id,
            )
            return None if value is None else str(value)

        worker_id = await wait_for(running_worker, every=0.05)
        pid = int(worker_id.split(":")[-2])
        victim = next(p for p in procs if p.pid == pid)
        victim.send_signal(signal.SIGKILL)
        killed_at = datetime.now(UTC)
        assert await exited(victim) == -signal.SIGKILL

        async def finished() -> bool:
            view = await queue.get(job_id)
            return view is not None and view.status == JobStatus.SUCCEEDED

        await wait_for(finished, every=0.2)

    view = await queue.get(job_id)
    assert view is not None
    assert [a.outcome for a in view.attempts] == ["lost", "succeeded"]
    lost, good = view.attempts
    assert lost.worker_id == worker_id
    assert good.worker_id is not None
    assert good.worker_id != worker_id
    recovery = (good.started_at - killed_at).total_seconds()
    sys.stderr.write(f"\nre-run started {recovery:.1f} s after SIGKILL\n")
    assert recovery < 30
    assert await scalar(engine, "SELECT runs FROM proc_runs WHERE job_id = :id", id=job_id) == 1


async def test_three_workers_drain_5000_jobs_exactly_once(
    engine: AsyncEngine, queue: ProcrastinateJobQueue, spawn: Spawn
) -> None:
    """Three worker processes drain 5,000 jobs: each one succeeds and runs exactly once."""
    total = 5000
    for _ in range(3):
        spawn(concurrency=10)
    async with asyncio.timeout(DRAIN_HANG):
        await workers_registered(engine, 3)
        started = time.monotonic()
        async with unit_of_work(queue.sessionmaker) as session:
            ids = await queue.defer_many(session, "count", [{"n": n} for n in range(total)])
        deferred = time.monotonic() - started
        assert len(set(ids)) == total
        await wait_for(
            lambda: _at_least(
                engine,
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
                total,
            ),
            every=0.5,
        )
        elapsed = time.monotonic() - started
    sys.stderr.write(
        f"\ndeferred {total} jobs in {deferred:.2f} s; all done after {elapsed:.1f} s"
        f" ({total / elapsed:.0f} jobs/s)\n"
    )
    stats = await queue.stats()
    assert stats.depth == {"succeeded": total}
    assert await scalar(engine, "SELECT count(*) FROM proc_runs") == total
    assert await scalar(engine, "SELECT max(runs) FROM proc_runs") == 1
    outcomes = await scalar(
        engine,
        "SELECT json_object_agg(outcome, n) FROM"
        " (SELECT outcome, count(*) AS n FROM job_attempts GROUP BY outcome) o",
    )
    assert outcomes == {"succeeded": total}
    # Three distinct processes shared the work.
    assert await scalar(engine, "SELECT count(DISTINCT worker_id) FROM job_attempts") == 3


async def test_sigterm_finishes_or_releases_running_jobs(
    engine: AsyncEngine, queue: ProcrastinateJobQueue, spawn: Spawn
) -> None:
    """SIGTERM lets a job that fits in the grace period finish and releases a longer one
    to `todo` with its attempt `lost`; nothing is left `doing`."""
    proc = spawn(concurrency=2, graceful=1.5)
    async with asyncio.timeout(HANG):
        await workers_registered(engine, 1)
        async with unit_of_work(queue.sessionmaker) as session:
            short = (await queue.defer(session, "slow", {"first": 0.5, "then": 0})).job_id
            long = (await queue.defer(session, "slow", {"first": 60, "then": 0})).job_id
        await wait_for(
            lambda: _at_least(
                engine, "SELECT count(*) FROM job_attempts WHERE outcome = 'running'", 2
            ),
            every=0.05,
        )
        proc.send_signal(signal.SIGTERM)
        assert await exited(proc) == 0

    short_view, long_view = await queue.get(short), await queue.get(long)
    assert short_view is not None
    assert long_view is not None
    assert short_view.status == JobStatus.SUCCEEDED
    assert [a.outcome for a in short_view.attempts] == ["succeeded"]
    assert long_view.status == JobStatus.TODO
    assert [a.outcome for a in long_view.attempts] == ["lost"]
    assert (
        await scalar(engine, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'") == 0
    )
    assert await scalar(engine, "SELECT count(*) FROM procrastinate_workers") == 0


async def test_schedule_fires_once_per_period_across_workers(
    engine: AsyncEngine, database_url: str
) -> None:
    """Two workers with the same every-second schedule defer one job per second between
    them, carrying the schedule's payload."""
    registry = TaskRegistry()
    seen: list[JsonDict] = []

    @registry.task("tick")
    async def tick(ctx: JobContext, payload: JsonDict) -> None:
        seen.append(payload)

    registry.schedule("* * * * * *", "tick", {"source": "cron"})
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    metrics = JobMetrics()
    queue = ProcrastinateJobQueue(
        sessionmaker, registry, metrics, conninfo=libpq_conninfo(database_url)
    )
    workers = [
        ProcrastinateWorker(
            queue,
            lambda worker_id: AttemptRunner(
                sessionmaker, registry, queue, worker_id=worker_id, metrics=metrics
            ),
            registry,
            poll_seconds=0.1,
        )
        for _ in range(2)
    ]
    for worker in workers:
        await worker.start()
    try:
        # Three periods' jobs, one run: waited for, not counted after a fixed 3.5 s (a
        # machine slow to start the workers or their schedulers sees fewer periods).
        async with asyncio.timeout(HANG):
            while True:
                if len(await queue.list(JobFilter(task="tick"))) >= 3 and seen:
                    break
                await asyncio.sleep(0.1)
    finally:
        for worker in workers:
            await worker.stop()
    jobs = await queue.list(JobFilter(task="tick"))
    periods = await scalar(
        engine,
        "SELECT count(DISTINCT args->>'timestamp') FROM procrastinate_jobs"
        " WHERE task_name = 'tick'",
    )
    assert len(jobs) >= 3
    assert periods == len(jobs)
    assert all(j.payload == {"source": "cron"} for j in jobs)
    assert seen
    assert all(p == {"source": "cron"} for p in seen)

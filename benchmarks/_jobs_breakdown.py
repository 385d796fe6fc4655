"""Where a job's time goes, for benchmarks/jobs_throughput.py: client CPU per operation.

Each piece runs sequentially in this process and is timed with `time.process_time()`
(CPU of every thread of the process, so aiosqlite's thread counts), after a warm-up.
The pieces run in ROUNDS interleaved rounds (a, b, c, a, b, c, ...) and the median round
is reported, so a neighbour's burst on the shared cores hits every piece alike. The
worker rounds are CPU-bound on 2 cores, so CPU per job is what decides throughput.
cProfile is not used: SQLAlchemy's asyncio layer switches greenlets under every query,
and cProfile then charges the wait to whatever frame was active, which points at
psycopg's send functions instead of the real costs.

PostgreSQL pieces:
- procrastinate's own bookkeeping per job (`fetch_job` + `finish_job`, as its worker does);
- `AttemptRunner.run` for a no-op job (SDK tracer; and with tracing off);
- one SQLAlchemy unit of work running one UPDATE (the unit the runner pays twice), and
  the same UPDATE in a transaction on a raw psycopg connection;
- the what-if runner of _jobs_whatif.py, with and without the pool's pre-ping.
SQLite pieces: the embedded claim at full queue depth and with an index in the claim's
order, `apply`, the runners, and one unit of work vs the same UPDATE on raw aiosqlite.
Both: one ingest request (insert one row), with `JobQueue.defer` and with the what-if
defer of _jobs_whatif.py.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiosqlite
import procrastinate
import psycopg
from opentelemetry.sdk.trace import TracerProvider
from procrastinate import jobs as pjobs
from procrastinate.types import JSONDict
from sqlalchemy import Index, Table, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from _jobs_ingest import LEADS, create_leads
from _jobs_pg import HOLD, QUEUE, TASK, libpq, noop_registry, prepare, scratch_database
from _jobs_sqlite import fresh_sqlite
from _jobs_whatif import LeanAttemptRunner, LeanDefer, lean_defer_pg, lean_defer_sqlite
from cauce.core.db import Database, unit_of_work, utcnow
from cauce.core.jobs.embedded import EmbeddedJobQueue
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.models import EmbeddedJob
from cauce.core.jobs.ports import AttemptOutcome, JobQueue, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue
from cauce.core.jobs.runner import AttemptRunner, ClaimedJob

Step = Callable[[int], Awaitable[Any]]
ROUNDS = 5
WARMUP = 30


async def interleaved(pieces: list[tuple[str, Step]], n: int) -> list[tuple[str, float]]:
    """Median µs of process CPU per call of each piece over ROUNDS interleaved rounds.

    Each piece gets its own call counter (`step(i)` sees 0, 1, 2, ... across rounds).
    """
    per_round = max(1, n // ROUNDS)
    counters = [0] * len(pieces)
    samples: list[list[float]] = [[] for _ in pieces]
    for k, (_label, step) in enumerate(pieces):
        for _ in range(WARMUP):
            await step(counters[k])
            counters[k] += 1
    for _ in range(ROUNDS):
        for k, (_label, step) in enumerate(pieces):
            start = time.process_time()
            for _ in range(per_round):
                await step(counters[k])
                counters[k] += 1
            samples[k].append((time.process_time() - start) / per_round * 1e6)
    return [(label, statistics.median(v)) for (label, _), v in zip(pieces, samples, strict=True)]


def _runner(
    cls: type[AttemptRunner],
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    tracer: TracerProvider | None,
    first_id: int,
) -> Step:
    runner = cls(
        sessionmaker,
        noop_registry(),
        queue,
        worker_id="bench",
        metrics=JobMetrics(),
        tracer_provider=tracer,
    )

    async def step(i: int) -> None:
        # Distinct job ids per piece: each job's attempts start from an empty history.
        await runner.run(ClaimedJob(first_id + i, TASK, QUEUE, {"n": i}, {}))

    return step


def _one_update(sessionmaker: async_sessionmaker[AsyncSession]) -> Step:
    async def step(i: int) -> None:
        async with unit_of_work(sessionmaker) as session:
            await session.execute(
                text("UPDATE job_attempts SET finished_at = finished_at WHERE id = :i"), {"i": i}
            )

    return step


def _requests(
    sessionmaker: async_sessionmaker[AsyncSession], queue: JobQueue, lean: LeanDefer
) -> list[tuple[str, Step]]:
    """One ingest request three ways: plain, with `JobQueue.defer`, with the what-if."""

    async def request(i: int, how: str) -> None:
        async with unit_of_work(sessionmaker) as session:
            lead_id = (
                await session.execute(
                    insert(LEADS)
                    .values(email=f"l{i}@example.com", name=f"Lead {i}", source="bench")
                    .returning(LEADS.c.id)
                )
            ).scalar_one()
            payload: JsonDict = {"lead_id": lead_id}
            if how == "defer":
                await queue.defer(session, TASK, payload, queue=HOLD)
            elif how == "lean":
                await lean(session, TASK, payload, queue=HOLD)

    def step(how: str) -> Step:
        return lambda i: request(i, how)

    return [
        ("request: insert one row", step("plain")),
        ("request: insert one row + JobQueue.defer", step("defer")),
        ("request: insert one row + what-if lean defer", step("lean")),
    ]


async def breakdown_pg(admin_url: str, n: int) -> list[tuple[str, float]]:
    """(label, µs of client CPU per call) for the PostgreSQL pieces."""
    with scratch_database(admin_url, "parts") as url:
        await prepare("cauce", url)
        # create_database's PostgreSQL pool options; pre-ping is what ships.
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        noping = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=False)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        sm_noping = async_sessionmaker(noping, expire_on_commit=False)
        queue = ProcrastinateJobQueue(
            sessionmaker, noop_registry(), JobMetrics(), conninfo=libpq(url)
        )
        await create_leads(engine)
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq(url)))
        raw = await psycopg.AsyncConnection.connect(libpq(url))

        async def raw_update(i: int) -> None:
            async with raw.transaction():
                await raw.execute(
                    b"UPDATE job_attempts SET finished_at = finished_at WHERE id = %s", (i,)
                )

        try:
            async with app.open_async():
                # Jobs for procrastinate's own claim + finish, on its own pool.
                payloads: list[JSONDict] = [{"n": i} for i in range(n + WARMUP + 10)]
                await app.configure_task(TASK, queue=QUEUE).batch_defer_async(*payloads)
                worker_id = await app.job_manager.register_worker()
                manager = app.job_manager

                async def fetch_finish(i: int) -> None:
                    job = await manager.fetch_job(queues=[QUEUE], worker_id=worker_id)
                    assert job is not None
                    await manager.finish_job(job, status=pjobs.Status.SUCCEEDED, delete_job=False)

                block = 10_000_000
                pieces: list[tuple[str, Step]] = [
                    ("procrastinate fetch_job + finish_job (bare's DB work)", fetch_finish),
                    (
                        "AttemptRunner.run, SDK tracer",
                        _runner(AttemptRunner, sessionmaker, queue, TracerProvider(), block),
                    ),
                    (
                        "AttemptRunner.run, tracing off",
                        _runner(AttemptRunner, sessionmaker, queue, None, 2 * block),
                    ),
                    ("one unit of work with one UPDATE", _one_update(sessionmaker)),
                    ("same UPDATE in a transaction on raw psycopg", raw_update),
                    (
                        "what-if LeanAttemptRunner.run, SDK tracer",
                        _runner(
                            LeanAttemptRunner, sessionmaker, queue, TracerProvider(), 3 * block
                        ),
                    ),
                    (
                        "what-if LeanAttemptRunner.run, SDK tracer, no pre-ping",
                        _runner(LeanAttemptRunner, sm_noping, queue, TracerProvider(), 4 * block),
                    ),
                    *_requests(sessionmaker, queue, lean_defer_pg),
                ]
                return await interleaved(pieces, n)
        finally:
            await raw.close()
            await engine.dispose()
            await noping.dispose()


def _claim_in_index_order(db: Database) -> Step:
    """The embedded claim, in Core, on a table with an index in the claim's order."""
    t = cast(Table, EmbeddedJob.__table__)

    async def step(i: int) -> None:
        now = utcnow()
        candidate = (
            select(t.c.id)
            .where(
                t.c.status == "todo",
                t.c.queue.in_([QUEUE]),
                or_(t.c.scheduled_at.is_(None), t.c.scheduled_at <= now),
            )
            .order_by(t.c.priority.desc(), t.c.id)
            .limit(1)
            .scalar_subquery()
        )
        stmt = (
            update(t)
            .where(t.c.id == candidate)
            .values(status="doing", worker_id="bench", attempts=t.c.attempts + 1, updated_at=now)
            .returning(t.c.id, t.c.task, t.c.queue, t.c.payload, t.c.context)
        )
        async with unit_of_work(db.sessionmaker) as session:
            (await session.execute(stmt)).one()

    return step


async def _fill(db: Database, queue: EmbeddedJobQueue, count: int) -> None:
    async with unit_of_work(db.sessionmaker) as session:
        for i in range(count):
            await queue.defer(session, TASK, {"n": i})


async def breakdown_sqlite(n: int, depth: int) -> list[tuple[str, float]]:
    """(label, µs of CPU per call) for the embedded engine's pieces."""
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        db = await fresh_sqlite(Path(tmp) / "a")
        indexed = await fresh_sqlite(Path(tmp) / "b")
        try:
            queue = EmbeddedJobQueue(db.sessionmaker, noop_registry(), JobMetrics())
            # Claims consume jobs: keep at least `depth` waiting until the last round.
            await _fill(db, queue, depth + n + WARMUP + 10)
            await _fill(
                indexed,
                EmbeddedJobQueue(indexed.sessionmaker, noop_registry(), JobMetrics()),
                depth + n + WARMUP + 10,
            )
            async with indexed.engine.begin() as conn:
                await conn.run_sync(
                    lambda c: Index(
                        "ix_bench_claim_order",
                        EmbeddedJob.status,
                        EmbeddedJob.queue,
                        EmbeddedJob.priority.desc(),
                        EmbeddedJob.id,
                    ).create(c)
                )
            await create_leads(db.engine)
            claimed: deque[int] = deque()

            async def claim(i: int) -> None:
                job = await queue.claim("bench", [QUEUE])
                assert job is not None
                claimed.append(job.id)

            async def apply(i: int) -> None:
                await queue.apply(claimed.popleft(), AttemptOutcome.SUCCEEDED, None)

            path = db.engine.url.database
            assert path is not None
            async with aiosqlite.connect(path) as raw:

                async def raw_update(i: int) -> None:
                    await raw.execute(
                        "UPDATE job_attempts SET finished_at = finished_at WHERE id = ?", (i,)
                    )
                    await raw.commit()

                block = 10_000_000
                pieces: list[tuple[str, Step]] = [
                    (f"EmbeddedJobQueue.claim, {depth}+ jobs waiting", claim),
                    ("EmbeddedJobQueue.apply", apply),
                    (
                        "what-if claim, index (status, queue, priority DESC, id)",
                        _claim_in_index_order(indexed),
                    ),
                    (
                        "AttemptRunner.run, SDK tracer",
                        _runner(AttemptRunner, db.sessionmaker, queue, TracerProvider(), block),
                    ),
                    (
                        "what-if LeanAttemptRunner.run, SDK tracer",
                        _runner(
                            LeanAttemptRunner, db.sessionmaker, queue, TracerProvider(), 2 * block
                        ),
                    ),
                    ("one unit of work with one UPDATE", _one_update(db.sessionmaker)),
                    ("same UPDATE + commit on raw aiosqlite", raw_update),
                    *_requests(db.sessionmaker, queue, lean_defer_sqlite),
                ]
                return await interleaved(pieces, n)
        finally:
            await db.dispose()
            await indexed.dispose()

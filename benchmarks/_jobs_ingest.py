"""What a `defer` adds to a request, for benchmarks/jobs_throughput.py.

A "request" is one unit of work that inserts one business row into a small table
(`bench_leads`) and, in the `defer` variant, defers one job carrying the new row's id in
the same transaction. No worker runs: only the request's cost is measured. Rounds of
the two variants alternate (plain, defer, plain, defer, ...) on the same database and
the medians are compared.

- SQLite (EmbeddedJobQueue): sequential, since SQLite has one writer.
- PostgreSQL (ProcrastinateJobQueue): PG_CONCURRENCY concurrent requests.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from _jobs_pg import HOLD, TASK, bench_settings, libpq, noop_registry, prepare, scratch_database
from _jobs_sqlite import fresh_sqlite
from _jobs_whatif import LeanDefer, lean_defer_pg, lean_defer_sqlite
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.jobs.embedded import EmbeddedJobQueue
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobQueue, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue

PG_CONCURRENCY = 16
_META = MetaData()
LEADS = Table(
    "bench_leads",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False),
    Column("name", String(200), nullable=False),
    Column("source", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# How a variant defers inside the request's transaction (None: it does not).
DeferFn = Callable[[AsyncSession, JsonDict], Awaitable[object]]


@dataclass
class IngestResult:
    """Requests/s per round for each variant on one engine."""

    engine: str
    concurrency: int
    per_round: int
    rates: dict[str, list[float]] = field(default_factory=dict)

    def median(self, variant: str) -> float:
        """Median requests/s of `variant`."""
        return statistics.median(self.rates[variant])

    def ratio(self, variant: str) -> float:
        """Median throughput of `variant` over the plain requests'."""
        return self.median(variant) / self.median("plain")


async def create_leads(engine: AsyncEngine) -> None:
    """Create the business table the requests insert into."""
    async with engine.begin() as conn:
        await conn.run_sync(_META.create_all)


async def _request(
    sessionmaker: async_sessionmaker[AsyncSession], defer: DeferFn | None, i: int
) -> None:
    async with unit_of_work(sessionmaker) as session:
        lead_id = (
            await session.execute(
                insert(LEADS)
                .values(email=f"lead{i}@example.com", name=f"Lead {i}", source="bench")
                .returning(LEADS.c.id)
            )
        ).scalar_one()
        if defer is not None:
            await defer(session, {"lead_id": lead_id})


async def _timed(
    sessionmaker: async_sessionmaker[AsyncSession],
    defer: DeferFn | None,
    n: int,
    concurrency: int,
    offset: int,
) -> float:
    """Requests per second for `n` requests from `concurrency` concurrent tasks."""
    counter = iter(range(offset, offset + n))

    async def lane() -> None:
        for i in counter:
            await _request(sessionmaker, defer, i)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


def _variants(queue: JobQueue, lean: LeanDefer | None) -> dict[str, DeferFn | None]:
    async def port(session: AsyncSession, payload: JsonDict) -> object:
        return await queue.defer(session, TASK, payload, queue=HOLD)

    variants: dict[str, DeferFn | None] = {"plain": None, "defer": port}
    if lean is not None:

        async def lean_defer(session: AsyncSession, payload: JsonDict) -> object:
            return await lean(session, TASK, payload, queue=HOLD)

        variants["what-if defer"] = lean_defer
    return variants


async def _alternate(
    db: Database,
    variants: dict[str, DeferFn | None],
    result: IngestResult,
    rounds: int,
    warmup: int,
) -> None:
    await create_leads(db.engine)
    offset = 0
    for defer in variants.values():  # warm every path (pool, statement caches)
        await _timed(db.sessionmaker, defer, warmup, result.concurrency, offset)
        offset += warmup
    for _ in range(rounds):
        for name, defer in variants.items():
            rate = await _timed(
                db.sessionmaker, defer, result.per_round, result.concurrency, offset
            )
            result.rates.setdefault(name, []).append(rate)
            offset += result.per_round


async def ingest_sqlite(per_round: int, rounds: int, *, what_if: bool = False) -> IngestResult:
    """Sequential requests on the embedded database, with and without a defer."""
    result = IngestResult("sqlite", 1, per_round)
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        db = await fresh_sqlite(Path(tmp))
        try:
            queue = EmbeddedJobQueue(db.sessionmaker, noop_registry(), JobMetrics())
            variants = _variants(queue, lean_defer_sqlite if what_if else None)
            await _alternate(db, variants, result, rounds, warmup=200)
        finally:
            await db.dispose()
    return result


async def ingest_pg(
    admin_url: str, per_round: int, rounds: int, *, what_if: bool = False
) -> IngestResult:
    """PG_CONCURRENCY concurrent requests on PostgreSQL, with and without a defer."""
    result = IngestResult("postgresql", PG_CONCURRENCY, per_round)
    with scratch_database(admin_url, "ingest") as url:
        await prepare("cauce", url)
        db = create_database(bench_settings(url, pool_size=PG_CONCURRENCY))
        try:
            queue = ProcrastinateJobQueue(
                db.sessionmaker, noop_registry(), JobMetrics(), conninfo=libpq(url)
            )
            variants = _variants(queue, lean_defer_pg if what_if else None)
            await _alternate(db, variants, result, rounds, warmup=200)
        finally:
            await db.dispose()
    return result

"""A procrastinate worker process for the process tests (tests/core/jobs/test_pg_processes.py).

    python -m tests.core.jobs.pg_worker_proc --url postgresql+psycopg://... --concurrency 4

It registers the test tasks below and runs `ProcrastinateWorker` until SIGTERM (or
SIGINT), which stops it gracefully. Every task records its execution in `proc_runs`
(one row per job, with an execution counter) inside the attempt's own transaction, so a
committed run is counted exactly once and a killed one not at all.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from cauce.core.db import Database
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue, libpq_conninfo
from cauce.core.jobs.procrastinate_worker import ProcrastinateWorker
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner

RUNS_DDL = "CREATE TABLE IF NOT EXISTS proc_runs (job_id bigint PRIMARY KEY, runs int NOT NULL)"
_COUNT_RUN = text(
    "INSERT INTO proc_runs (job_id, runs) VALUES (:id, 1)"
    " ON CONFLICT (job_id) DO UPDATE SET runs = proc_runs.runs + 1"
)


def build_registry() -> TaskRegistry:
    """The tasks the process tests defer."""
    registry = TaskRegistry()

    @registry.task("count")
    async def count(ctx: JobContext, payload: JsonDict) -> None:
        await ctx.session.execute(_COUNT_RUN, {"id": ctx.job_id})

    @registry.task("slow")
    async def slow(ctx: JobContext, payload: JsonDict) -> None:
        # The first attempt takes `first` seconds (long enough to be killed mid-way);
        # later attempts take `then`.
        await asyncio.sleep(payload["first"] if ctx.attempt == 1 else payload["then"])
        await ctx.session.execute(_COUNT_RUN, {"id": ctx.job_id})

    return registry


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="SQLAlchemy postgresql+psycopg URL")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--graceful", type=float, default=30.0)
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--stalled", type=float, default=10.0)
    parser.add_argument("--sweep", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=1.0)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    """Run a worker until SIGTERM/SIGINT, then stop it gracefully."""
    engine = create_async_engine(
        args.url, pool_size=args.concurrency + 2, max_overflow=4, pool_pre_ping=True
    )
    db = Database(engine, async_sessionmaker(engine, expire_on_commit=False))
    registry = build_registry()
    metrics = JobMetrics()
    queue = ProcrastinateJobQueue(
        db.sessionmaker, registry, metrics, conninfo=libpq_conninfo(args.url)
    )
    worker = ProcrastinateWorker(
        queue,
        lambda worker_id: AttemptRunner(
            db.sessionmaker, registry, queue, worker_id=worker_id, metrics=metrics
        ),
        registry,
        concurrency=args.concurrency,
        graceful_seconds=args.graceful,
        heartbeat_seconds=args.heartbeat,
        stalled_seconds=args.stalled,
        sweep_seconds=args.sweep,
        poll_seconds=args.poll,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(run(_parse()))

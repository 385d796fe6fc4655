"""A worker process for benchmarks/jobs_throughput.py: bare procrastinate or Cauce's engine.

    python benchmarks/_jobs_worker_proc.py --engine bare|cauce --url postgresql+psycopg://...

Both run one no-op task called `noop` on the queue `bench`, with the same concurrency,
polling interval and LISTEN/NOTIFY, until SIGTERM (or SIGINT).

- `bare`: procrastinate's own App + PsycopgConnector and a plain `@app.task`.
- `cauce`: `ProcrastinateWorker` + `AttemptRunner` as `cauce worker` builds them
  (cauce.core.jobs.factory): the engine from `create_database` (production pool options,
  pre-ping included), the attempts table, an SDK tracer provider (spans recorded, not
  exported), Prometheus metrics, structlog. `--runner lean` swaps in the what-if runner
  of _jobs_whatif.py; `--pre-ping off` builds the same pool without pre-ping.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

import procrastinate
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from _jobs_pg import QUEUE, TASK, libpq
from _jobs_whatif import LeanAttemptRunner
from cauce.core.config import LogSettings, Settings
from cauce.core.db import Database, create_database
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue
from cauce.core.jobs.procrastinate_worker import ProcrastinateWorker
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner
from cauce.core.observability.logging import configure_logging


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=["bare", "cauce"], required=True)
    parser.add_argument("--url", required=True, help="SQLAlchemy postgresql+psycopg URL")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.5, help="fetch polling interval (s)")
    parser.add_argument("--tracing", choices=["sdk", "off"], default="sdk")
    parser.add_argument("--runner", choices=["std", "lean"], default="std")
    parser.add_argument("--pre-ping", choices=["on", "off"], default="on")
    return parser.parse_args()


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_bare(args: argparse.Namespace) -> None:
    """procrastinate alone: a no-op task, nothing else."""
    logging.basicConfig(level=logging.WARNING)
    # The same pool ceiling as Cauce's worker gives procrastinate (min(concurrency, 8) + 2).
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=libpq(args.url), min_size=1, max_size=min(args.concurrency, 8) + 2
        )
    )

    @app.task(name=TASK, queue=QUEUE)
    async def noop(**kwargs: Any) -> None:
        return None

    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                concurrency=args.concurrency,
                queues=[QUEUE],
                wait=True,
                fetch_job_polling_interval=args.poll,
                listen_notify=True,
                install_signal_handlers=False,
            )
        )
        await _wait_for_signal()
        worker.cancel()
        await asyncio.wait({worker})


def _database(settings: Settings, pre_ping: bool) -> Database:
    if pre_ping:
        return create_database(settings)
    # create_database's PostgreSQL pool, minus the pre-ping (the what-if).
    engine = create_async_engine(
        settings.effective_database_url,
        pool_size=settings.db.pool_size,
        max_overflow=settings.db.max_overflow,
        pool_timeout=settings.db.pool_timeout_seconds,
        pool_pre_ping=False,
    )
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False))


async def run_cauce(args: argparse.Namespace) -> None:
    """Cauce's PostgreSQL engine, wired the way `cauce worker` wires it."""
    settings = Settings(database_url=args.url, log=LogSettings(level="warning", format="json"))
    configure_logging(settings)
    db = _database(settings, args.pre_ping == "on")
    registry = TaskRegistry()

    @registry.task(TASK, queue=QUEUE)
    async def noop(ctx: JobContext, payload: JsonDict) -> None:
        return None

    tracer_provider: Any = None
    if args.tracing == "sdk":
        from opentelemetry.sdk.trace import TracerProvider

        tracer_provider = TracerProvider()
    runner_cls = LeanAttemptRunner if args.runner == "lean" else AttemptRunner
    metrics = JobMetrics()
    queue = ProcrastinateJobQueue(db.sessionmaker, registry, metrics, conninfo=libpq(args.url))
    worker = ProcrastinateWorker(
        queue,
        lambda worker_id: runner_cls(
            db.sessionmaker,
            registry,
            queue,
            worker_id=worker_id,
            metrics=metrics,
            tracer_provider=tracer_provider,
        ),
        registry,
        concurrency=args.concurrency,
        queues=[QUEUE],
        poll_seconds=args.poll,
        heartbeat_seconds=settings.jobs.heartbeat_seconds,
        stalled_seconds=settings.jobs.stalled_after_seconds,
        sweep_seconds=settings.jobs.sweep_seconds,
    )
    await worker.start()
    try:
        await _wait_for_signal()
    finally:
        await worker.stop()
        await db.dispose()


def main() -> None:
    """Run the chosen engine until SIGTERM."""
    args = _parse()
    asyncio.run(run_bare(args) if args.engine == "bare" else run_cauce(args))


if __name__ == "__main__":
    main()

"""A worker process for benchmarks/jobs_throughput.py: bare procrastinate or Cauce's engine.

    python benchmarks/_jobs_worker_proc.py --engine bare|cauce --url postgresql+psycopg://...
        [--concurrency 10] [--tracing sdk|off] [--profile FILE]

Both run one no-op task called `noop` on the queue `bench`, with the same concurrency,
polling interval and LISTEN/NOTIFY, until SIGTERM (or SIGINT).

- `bare`: procrastinate's own App + PsycopgConnector and a plain `@app.task`.
- `cauce`: the worker `cauce worker` runs, built by the same factory
  (`cauce.core.jobs.factory.build_job_worker`: `ProcrastinateWorker` + `AttemptRunner`)
  on the engine from `create_database` (production pool options, pre-ping included),
  with the attempts table (written by migration 0006's triggers), an SDK tracer provider
  (spans recorded, not exported), Prometheus metrics and structlog.

`--profile FILE`: SIGUSR1 starts a SIGPROF sampling profiler (_jobs_profile.Sampler), and
at SIGTERM its report (_jobs_profile.py: CPU ms per job by area and by function, over
`--jobs`) is written to FILE. The benchmark sends SIGUSR1 when it releases the jobs, so
only the drain is sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import procrastinate

from _jobs_pg import QUEUE, TASK, libpq
from _jobs_profile import Sampler, report
from cauce.core.config import JobsSettings, LogSettings, Settings
from cauce.core.db import create_database
from cauce.core.jobs.factory import build_job_queue, build_job_worker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.observability.logging import configure_logging


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=["bare", "cauce"], required=True)
    parser.add_argument("--url", required=True, help="SQLAlchemy postgresql+psycopg URL")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.5, help="fetch polling interval (s)")
    parser.add_argument("--tracing", choices=["sdk", "off"], default="sdk")
    parser.add_argument("--profile", type=Path, default=None, help="sample the drain into FILE")
    parser.add_argument("--jobs", type=int, default=1, help="jobs of the round (for --profile)")
    return parser.parse_args()


class _Profiler:
    """SIGUSR1 starts sampling; `stop` writes the report (if it ever started)."""

    def __init__(self, out: Path | None, title: str, jobs: int) -> None:
        self._out = out
        self._title = title
        self._jobs = jobs
        self._sampler: Sampler | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._out is not None:
            loop.add_signal_handler(signal.SIGUSR1, self._start)

    def _start(self) -> None:
        if self._sampler is None:
            self._sampler = Sampler().__enter__()

    def stop(self) -> None:
        if self._sampler is None or self._out is None:
            return
        self._sampler.__exit__()
        self._out.write_text(report(self._sampler, self._title, self._jobs))


async def _wait_for_signal(profiler: _Profiler) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    profiler.install(loop)
    await stop.wait()
    profiler.stop()


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
        await _wait_for_signal(_Profiler(args.profile, "bare worker process", args.jobs))
        worker.cancel()
        await asyncio.wait({worker})


async def run_cauce(args: argparse.Namespace) -> None:
    """Cauce's PostgreSQL engine, wired the way `cauce worker` wires it."""
    settings = Settings(
        database_url=args.url,
        log=LogSettings(level="warning", format="json"),
        jobs=JobsSettings(poll_seconds=args.poll),
    )
    configure_logging(settings)
    db = create_database(settings)
    registry = TaskRegistry()

    @registry.task(TASK, queue=QUEUE)
    async def noop(ctx: JobContext, payload: JsonDict) -> None:
        return None

    tracer_provider: Any = None
    if args.tracing == "sdk":
        from opentelemetry.sdk.trace import TracerProvider

        tracer_provider = TracerProvider()
    metrics = JobMetrics()
    queue = build_job_queue(db, registry, metrics)
    worker = build_job_worker(
        queue,
        db,
        registry,
        metrics,
        settings.jobs,
        tracer_provider=tracer_provider,
        concurrency=args.concurrency,
        queues=[QUEUE],
    )
    await worker.start()
    try:
        await _wait_for_signal(_Profiler(args.profile, "Cauce worker process", args.jobs))
    finally:
        await worker.stop()
        await db.dispose()


def main() -> None:
    """Run the chosen engine until SIGTERM."""
    args = _parse()
    asyncio.run(run_bare(args) if args.engine == "bare" else run_cauce(args))


if __name__ == "__main__":
    main()

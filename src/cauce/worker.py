"""`cauce worker`: the worker's composition root.

It builds the same resources as the API (`open_resources`: settings, database, every
context's tasks, tracing) and runs procrastinate's worker on them until SIGTERM or
SIGINT, then shuts down gracefully: it stops claiming, lets running jobs finish for
`jobs.graceful_shutdown_seconds`, and releases the rest to `todo` (their attempts are
marked `lost`), so no job is left `doing`.

PostgreSQL only: on SQLite the worker runs inside `cauce serve` (ADR 0006).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence

import structlog
from opentelemetry.instrumentation.utils import suppress_instrumentation
from prometheus_client import start_http_server

from cauce.app import job_worker_for, open_resources
from cauce.core.config import Settings, setting_name
from cauce.core.errors import ConfigError
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobQueue
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.observability.metrics import build_registry
from cauce.core.observability.tracing import build_tracer_provider

log = structlog.get_logger("cauce.worker")

SQLITE_REFUSAL = (
    "on SQLite the worker runs inside `cauce serve`; use PostgreSQL to run separate workers"
)
# How often a worker with a metrics port refreshes its queue-depth gauges.
GAUGE_REFRESH_SECONDS = 15.0


class WorkerRefused(ConfigError):
    """This configuration cannot run separate workers."""


def unknown_queues(
    tasks: TaskRegistry, queues: Sequence[str] | None, settings: Settings
) -> str | None:
    """Why a worker asked to serve `queues` (else `jobs.queues`) would serve a queue no
    task runs on, naming the option (or variable) and the queues there are; or None.
    Such a worker started, claimed nothing, and looked healthy."""
    served = list(queues or settings.jobs.queues)
    known = sorted({spec.queue for spec in tasks.tasks.values()})
    unknown = [queue for queue in dict.fromkeys(served) if queue not in known]
    if not unknown:
        return None
    source = "--queues" if queues else setting_name(("jobs", "queues"))
    names = ", ".join(repr(queue) for queue in unknown)
    queue = "queues" if len(unknown) > 1 else "queue"
    return f"{source}: no task runs on {queue} {names}; the queues are {', '.join(known)}"


async def _refresh_gauges(queue: JobQueue, metrics: JobMetrics) -> None:
    while True:
        try:
            with suppress_instrumentation():
                metrics.set_stats(await queue.stats())
        except Exception as exc:  # noqa: BLE001 - stale gauges are better than no worker
            log.warning("metrics.refresh_failed", error_class=type(exc).__name__)
        await asyncio.sleep(GAUGE_REFRESH_SECONDS)


async def run_worker(
    settings: Settings,
    *,
    concurrency: int | None = None,
    queues: Sequence[str] | None = None,
    metrics_port: int | None = None,
    tasks: TaskRegistry | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a worker until SIGTERM/SIGINT (or `stop` is set), then stop it gracefully.

    `concurrency` and `queues` override the `jobs` settings; `metrics_port` serves the
    worker's Prometheus metrics on `http.host`; `tasks` adds tasks (tests).
    """
    if settings.is_sqlite:
        raise WorkerRefused(SQLITE_REFUSAL)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    registry = build_registry()
    job_metrics = JobMetrics(registry)
    tracer_provider = build_tracer_provider(settings)
    try:
        async with open_resources(
            settings,
            registry=registry,
            job_metrics=job_metrics,
            tracer_provider=tracer_provider,
            tasks=tasks,
        ) as resources:
            if problem := unknown_queues(resources.tasks, queues, settings):
                raise WorkerRefused(problem)
            worker = resources.job_worker = job_worker_for(
                resources, concurrency=concurrency, queues=queues
            )
            served = concurrency or settings.jobs.concurrency
            if served + 2 > settings.db.pool_size + settings.db.max_overflow:
                log.warning(
                    "cauce.worker.pool_too_small",
                    concurrency=served,
                    pool=settings.db.pool_size + settings.db.max_overflow,
                    hint="raise CAUCE_DB__POOL_SIZE or lower the concurrency",
                )
            gauges: asyncio.Task[None] | None = None
            server = None
            if metrics_port is not None:
                try:
                    server, _ = start_http_server(metrics_port, settings.http.host, registry)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot serve metrics on {settings.http.host}:{metrics_port}: "
                        f"{exc.strerror or exc}"
                    ) from None
                gauges = asyncio.create_task(_refresh_gauges(resources.jobs, job_metrics))
            await worker.start()
            log.info(
                "cauce.worker.started",
                concurrency=served,
                queues=list(queues or settings.jobs.queues) or "all",
                tasks=sorted(resources.tasks.tasks),
            )
            try:
                await stop.wait()
                log.info(
                    "cauce.worker.stopping",
                    graceful_seconds=settings.jobs.graceful_shutdown_seconds,
                )
            finally:
                await worker.stop()
                if gauges is not None:
                    gauges.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await gauges
                if server is not None:
                    server.shutdown()
                    server.server_close()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if tracer_provider is not None:
            tracer_provider.shutdown()
        log.info("cauce.worker.stopped")

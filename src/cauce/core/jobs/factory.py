"""The one place that picks the engine for a database: embedded on SQLite, procrastinate
on PostgreSQL. The API, `cauce worker` and the CLI all build their queue here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from opentelemetry.trace import TracerProvider

from cauce.core.config import JobsSettings
from cauce.core.db.engine import Database
from cauce.core.jobs.embedded import EmbeddedJobQueue, EmbeddedWorker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobQueue
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner


class JobWorker(Protocol):
    """What both engines' workers offer their host process."""

    @property
    def running(self) -> bool:
        """Started, and its loop is alive."""
        ...

    async def start(self) -> None:
        """Start claiming and running jobs in the background."""
        ...

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for the grace period, release the rest."""
        ...

    async def run_until_idle(self, limit_seconds: float = 30.0) -> None:
        """Run jobs until nothing is due or running (tests and one-off drains)."""
        ...


def build_job_queue(db: Database, registry: TaskRegistry, metrics: JobMetrics) -> JobQueue:
    """The queue for `db`'s dialect. Deferring needs no pool of its own: jobs are written
    on the caller's session."""
    if db.dialect == "sqlite":
        return EmbeddedJobQueue(db.sessionmaker, registry, metrics)
    # Imported here: procrastinate is only needed, and only loaded, on PostgreSQL.
    from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue, libpq_conninfo

    return ProcrastinateJobQueue(
        db.sessionmaker, registry, metrics, conninfo=libpq_conninfo(db.engine.url)
    )


def build_job_worker(
    queue: JobQueue,
    db: Database,
    registry: TaskRegistry,
    metrics: JobMetrics,
    settings: JobsSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    concurrency: int | None = None,
    queues: Sequence[str] | None = None,
) -> JobWorker:
    """A worker for `queue`'s engine, tuned by `settings` (`concurrency` and `queues`
    override theirs). Register every task first: procrastinate learns them here."""
    concurrency = concurrency or settings.concurrency
    served = list(queues or settings.queues) or None

    def runner(worker_id: str) -> AttemptRunner:
        return AttemptRunner(
            db.sessionmaker,
            registry,
            queue,
            worker_id=worker_id,
            metrics=metrics,
            tracer_provider=tracer_provider,
        )

    if isinstance(queue, EmbeddedJobQueue):
        return EmbeddedWorker(
            queue,
            runner,
            registry,
            concurrency=concurrency,
            queues=served,
            poll_seconds=settings.poll_seconds,
            graceful_seconds=settings.graceful_shutdown_seconds,
        )
    from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue
    from cauce.core.jobs.procrastinate_worker import ProcrastinateWorker

    if not isinstance(queue, ProcrastinateJobQueue):
        raise TypeError(f"no worker for a {type(queue).__name__}")
    return ProcrastinateWorker(
        queue,
        runner,
        registry,
        concurrency=concurrency,
        queues=served,
        graceful_seconds=settings.graceful_shutdown_seconds,
        poll_seconds=settings.poll_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        stalled_seconds=settings.stalled_after_seconds,
        sweep_seconds=settings.sweep_seconds,
    )

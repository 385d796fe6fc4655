"""The PostgreSQL kit: procrastinate's tables and worker, for the contract suite."""

from __future__ import annotations

import random
from dataclasses import dataclass

from cauce.core.db import Database
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue, libpq_conninfo
from cauce.core.jobs.procrastinate_worker import ProcrastinateWorker
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner


@dataclass
class ProcrastinateKit:
    """The procrastinate engine with an in-process worker polling fast (tests wait on it)."""

    db: Database
    registry: TaskRegistry
    queue: ProcrastinateJobQueue
    worker: ProcrastinateWorker
    metrics: JobMetrics

    @classmethod
    async def create(
        cls,
        db: Database,
        registry: TaskRegistry,
        *,
        concurrency: int = 4,
        graceful_seconds: float = 5.0,
        rng: random.Random | None = None,
    ) -> ProcrastinateKit:
        """Build the queue and a worker on `db` for `registry`'s tasks."""
        metrics = JobMetrics()
        queue = ProcrastinateJobQueue(
            db.sessionmaker, registry, metrics, conninfo=libpq_conninfo(db.engine.url)
        )
        rng = rng or random.Random(7)
        worker = ProcrastinateWorker(
            queue,
            lambda worker_id: AttemptRunner(
                db.sessionmaker,
                registry,
                queue,
                worker_id=worker_id,
                metrics=metrics,
                rng=rng,
            ),
            registry,
            concurrency=concurrency,
            graceful_seconds=graceful_seconds,
            poll_seconds=0.05,
        )
        return cls(db, registry, queue, worker, metrics)

    async def drain(self, limit_seconds: float = 30.0) -> None:
        """Run the worker until nothing is due or running."""
        await self.worker.run_until_idle(limit_seconds)

    async def start(self) -> None:
        """Start the worker in the background."""
        await self.worker.start()

    async def stop(self) -> None:
        """Stop the worker gracefully (a no-op when it is not running)."""
        await self.worker.stop()

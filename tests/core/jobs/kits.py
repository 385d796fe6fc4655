"""Engine kits: one way to build a queue + worker per engine, for the contract suite."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cauce.core.db import Database
from cauce.core.jobs.embedded import EmbeddedJobQueue, EmbeddedWorker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobQueue
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner


class Kit(Protocol):
    """What the contract suite needs from an engine."""

    # Read-only, so a kit may hold a concrete engine (a mutable protocol member is
    # invariant: EmbeddedJobQueue would not match JobQueue).
    @property
    def queue(self) -> JobQueue: ...
    @property
    def registry(self) -> TaskRegistry: ...
    @property
    def db(self) -> Database: ...
    @property
    def metrics(self) -> JobMetrics: ...

    async def drain(self, limit_seconds: float = 30.0) -> None:
        """Run jobs until nothing is due or running (future retries stay scheduled)."""
        ...

    async def start(self) -> None:
        """Start a background worker."""
        ...

    async def stop(self) -> None:
        """Stop the background worker gracefully."""
        ...


@dataclass
class FakeClock:
    """A settable UTC clock."""

    current: datetime

    def __call__(self) -> datetime:
        return self.current


@dataclass
class EmbeddedKit:
    """The SQLite engine with its in-process dispatcher."""

    db: Database
    registry: TaskRegistry
    now: Callable[[], datetime]
    concurrency: int = 4
    graceful_seconds: float = 5.0
    metrics: JobMetrics = field(default_factory=JobMetrics)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def __post_init__(self) -> None:
        self.queue: EmbeddedJobQueue = EmbeddedJobQueue(
            self.db.sessionmaker, self.registry, self.metrics, now=self.now
        )
        self.worker = EmbeddedWorker(
            self.queue,
            lambda worker_id: AttemptRunner(
                self.db.sessionmaker,
                self.registry,
                self.queue,
                worker_id=worker_id,
                metrics=self.metrics,
                now=self.now,
                rng=self.rng,
            ),
            self.registry,
            concurrency=self.concurrency,
            poll_seconds=0.05,
            graceful_seconds=self.graceful_seconds,
            now=self.now,
        )

    async def drain(self, limit_seconds: float = 30.0) -> None:
        """Dispatch until idle."""
        await self.worker.run_until_idle(limit_seconds)

    async def start(self) -> None:
        """Start dispatching in the background."""
        await self.worker.start()

    async def stop(self) -> None:
        """Stop gracefully."""
        await self.worker.stop()

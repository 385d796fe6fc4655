"""The `JobQueue` port: what every engine promises (DESIGN.md §2).

A job is deferred inside the caller's transaction (it exists if and only if that
transaction commits), runs a registered task with a JSON payload, and moves through
todo -> doing -> succeeded | failed (dead letter) | cancelled. Every attempt is recorded
in `job_attempts`. Handlers are idempotent: a job may run again after a crash.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: `cauce --help` lists JobStatus without SQLAlchemy
    from sqlalchemy.ext.asyncio import AsyncSession

JsonDict = dict[str, Any]


class JobStatus(enum.StrEnum):
    """The states a job moves through."""

    TODO = "todo"
    DOING = "doing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended (`running` until it does)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RETRY = "retry"  # failed, another attempt is scheduled
    POSTPONED = "postponed"  # the handler asked to run later; not counted against the budget
    FAILED = "failed"  # failed for good: the job is now `failed`
    LOST = "lost"  # the worker died or was stopped mid-attempt; the job was released
    REPLAYED = "replayed"  # marker: an operator gave the job a fresh budget


class RetryLater(Exception):
    """Raised by a handler to run again at `at` (e.g. the CRM said `Retry-After: 30`).

    A postponement does not use up the retry budget; `max_postponements` on the task's
    policy bounds how often it can happen.
    """

    def __init__(self, at: datetime, reason: str = "") -> None:
        super().__init__(reason or f"retry at {at.isoformat()}")
        self.at = at
        self.reason = reason


class PermanentJobError(Exception):
    """Raised by a handler for a failure no retry can fix: the job fails at once."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler knows about the attempt it is running.

    `session` is the attempt's unit of work, opened on first use: what the handler writes
    and the jobs it defers commit together when it returns.
    """

    job_id: int
    task: str
    queue: str
    attempt: int
    worker_id: str
    open_session: Callable[[], AsyncSession]
    queue_port: JobQueue

    @property
    def session(self) -> AsyncSession:
        """The attempt's session (the same one on every access)."""
        return self.open_session()


Handler = Callable[[JobContext, JsonDict], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeferResult:
    """The job id, and whether a waiting job with the same dedupe key was reused."""

    job_id: int
    deduplicated: bool = False


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs an operator means (every field optional)."""

    status: JobStatus | None = None
    task: str | None = None
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    error_class: str | None = None


# What an operator can replay: a job that failed for good, or one cancelled before it ran.
REPLAYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


def replay_status(flt: JobFilter) -> JobStatus:
    """The status bulk replay acts on: `failed` unless the filter asks for `cancelled`."""
    status = flt.status or JobStatus.FAILED
    if status not in REPLAYABLE:
        raise ValueError(f"only failed or cancelled jobs can be replayed, not {status}")
    return status


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One row of the attempts table."""

    attempt: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error_class: str | None
    error_message: str | None
    worker_id: str | None
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as operators see it."""

    id: int
    task: str
    queue: str
    status: JobStatus
    priority: int
    lock: str | None
    dedupe_key: str | None
    scheduled_at: datetime | None
    created_at: datetime | None
    payload: JsonDict
    attempts: list[AttemptView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth by state and the age of the oldest waiting job."""

    depth: Mapping[str, int]
    oldest_todo_age_seconds: float | None


# Rows one purge statement deletes at most: small enough that no statement holds its
# locks (SQLite's single writer, PostgreSQL's row locks) for long.
DEFAULT_PURGE_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished jobs are kept before `JobQueue.purge` deletes them.

    `failed` also covers cancelled jobs: both are dead letters an operator may still
    replay, and a failure's attempts are the evidence of what went wrong.
    """

    succeeded: timedelta
    failed: timedelta
    chunk: int = DEFAULT_PURGE_CHUNK

    def __post_init__(self) -> None:
        if self.succeeded <= timedelta(0) or self.failed <= timedelta(0):
            raise ValueError("retention periods must be positive")
        if self.chunk < 1:
            raise ValueError("chunk must be at least 1")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge deleted (or, dry, would delete): jobs by the port's status
    (`succeeded`, `failed`, `cancelled`), their attempt rows, and the statements used."""

    deleted: Mapping[str, int]
    attempts: int
    chunks: int
    dry_run: bool = False

    @property
    def total(self) -> int:
        """Jobs deleted, every status together."""
        return sum(self.deleted.values())


class JobQueue(Protocol):
    """The port both engines implement; see tests/core/jobs/test_contract.py."""

    engine: str

    async def defer(
        self,
        session: AsyncSession,
        task: str,
        payload: JsonDict,
        *,
        queue: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
        lock: str | None = None,
        dedupe_key: str | None = None,
    ) -> DeferResult:
        """Insert a job on `session`'s transaction; it exists only if that commits."""
        ...

    async def get(self, job_id: int) -> JobView | None:
        """A job with its attempts, or None."""
        ...

    async def list(
        self, flt: JobFilter, *, after_id: int | None = None, limit: int = 50
    ) -> list[JobView]:
        """Jobs matching `flt`, newest first, starting below `after_id` (cursor)."""
        ...

    async def retry(self, job_id: int) -> JobView:
        """Run a failed or cancelled job again with a fresh attempt budget.

        `NotFound` for an unknown id; `Conflict` for a job in another state, or when
        another waiting job holds its dedupe key.
        """
        ...

    async def retry_many(self, flt: JobFilter) -> int:
        """Replay every failed job matching `flt` (cancelled ones if `flt.status` says so),
        skipping any whose dedupe key another waiting job holds; returns how many."""
        ...

    async def cancel(self, job_id: int) -> JobView:
        """Cancel a waiting job; `Conflict` once it is running or finished."""
        ...

    async def stats(self) -> QueueStats:
        """Depth by state and oldest waiting age."""
        ...

    async def purge(self, retention: Retention, *, dry_run: bool = False) -> PurgeResult:
        """Delete the jobs that finished (succeeded, failed, cancelled) longer ago than
        `retention` says, with their attempts, `retention.chunk` jobs per transaction;
        jobs waiting (a retry included) or running are never touched. `dry_run` counts
        what would go and deletes nothing."""
        ...

    async def check(self) -> None:
        """Readiness: raises if the engine cannot reach its storage."""
        ...

"""Retention of finished jobs: the periodic `core.jobs_purge` job and its walk.

Jobs that succeeded are kept `jobs.retention_succeeded_days` (7), jobs that failed or
were cancelled `jobs.retention_failed_days` (30: they are the dead letters, still
replayable, and their attempts are the evidence). Past that, `JobQueue.purge` deletes
them with their attempts, on `jobs.purge_cron` (hourly) or from `cauce jobs purge`.
Jobs waiting (a retry or a postponement included) or running are never deleted.

Both engines purge the same way (`walk`): through the job table in id order, one window
of `chunk` ids at a time, each window's finished-and-old jobs deleted in a transaction of
its own, so no statement holds SQLite's write lock or PostgreSQL's row locks for long,
and a long purge lets the workers go on between windows. The walk stops after the window
that reaches jobs created since the newest cutoff: ids grow with creation time, so no
later job can be old enough, and an hourly run does not read the whole retained table.
Ids and creation times are not in exactly the same order (a creation time is taken
before the insert waits for SQLite's lock, and is the transaction's start on
PostgreSQL), so a job may be left to a later run; never deleted early, since every
deletion checks the job's own status and finish time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import structlog

from cauce.core.config import JobsSettings
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JobQueue, JsonDict, PurgeResult, Retention
from cauce.core.jobs.registry import TaskRegistry, TaskSpec

log = structlog.get_logger("cauce.jobs")

PURGE_TASK = "core.jobs_purge"
# The port's statuses a purge reports, each engine's own mapped onto them.
PURGED_STATUSES = ("succeeded", "failed", "cancelled")


def retention_from(settings: JobsSettings) -> Retention:
    """The retention the `jobs` settings ask for."""
    return Retention(
        succeeded=timedelta(days=settings.retention_succeeded_days),
        failed=timedelta(days=settings.retention_failed_days),
        chunk=settings.purge_chunk_size,
    )


@dataclass(frozen=True, slots=True)
class Window:
    """One window of the walk: what it deleted, and where the next one starts (None: the
    walk is over)."""

    deleted: Mapping[str, int]
    attempts: int
    next_after: int | None


async def walk(step: Callable[[int], Awaitable[Window]], *, dry_run: bool) -> PurgeResult:
    """Run `step(after)` from the lowest id until a window ends the walk; sum them up."""
    deleted: Counter[str] = Counter(dict.fromkeys(PURGED_STATUSES, 0))
    attempts = windows = 0
    after: int | None = 0
    while after is not None:
        window = await step(after)
        windows += 1
        deleted.update(window.deleted)
        attempts += window.attempts
        after = window.next_after
    return PurgeResult(dict(deleted), attempts, windows, dry_run)


async def purge_finished_jobs(
    queue: JobQueue, retention: Retention, *, dry_run: bool = False
) -> PurgeResult:
    """Purge `queue` and log one `jobs.purged` line with the counts."""
    started = time.monotonic()
    result = await queue.purge(retention, dry_run=dry_run)
    log.info(
        "jobs.purged",
        dry_run=dry_run,
        **{status: result.deleted.get(status, 0) for status in PURGED_STATUSES},
        attempts=result.attempts,
        chunks=result.chunks,
        seconds=round(time.monotonic() - started, 3),
    )
    return result


def register_jobs_purge(registry: TaskRegistry, retention: Retention, cron: str | None) -> None:
    """Register `core.jobs_purge`, and run it on `cron` (None: only when deferred by hand)."""

    async def purge(ctx: JobContext, _payload: JsonDict) -> None:
        """The periodic job: delete the finished jobs past their retention."""
        await purge_finished_jobs(ctx.queue_port, retention)

    # One attempt: a failed purge is simply done again by the next period, and what it
    # deleted before failing stays deleted (each window commits on its own).
    registry.add(TaskSpec(PURGE_TASK, purge, policy=RetryPolicy(max_attempts=1)))
    if cron is not None:
        registry.schedule(cron, PURGE_TASK)

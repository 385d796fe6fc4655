"""Crash recovery and idleness for the procrastinate engine.

procrastinate does not recover the jobs of a killed worker by itself. `sweep_stalled`
moves the `doing` jobs of workers whose heartbeat is older than `stalled_seconds` back to
`todo` and marks their attempts `lost`; every `cauce worker` runs it on a schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import procrastinate
from sqlalchemy import and_, exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.db.uow import unit_of_work
from cauce.core.jobs.attempts import mark_lost
from cauce.core.jobs.procrastinate_tables import JOBS, notify_waiting


def _claimable(queues: Sequence[str] | None) -> Any:
    """The condition procrastinate's fetch uses: due `todo` jobs whose lock is free.

    A lock is taken by a `doing` job, or by an earlier (or higher-priority) `todo` job with
    the same lock: procrastinate runs the jobs of one lock in order.
    """
    other = JOBS.alias("other")
    blocked = exists().where(
        JOBS.c.lock.is_not(None),
        other.c.lock == JOBS.c.lock,
        or_(
            other.c.status == "doing",
            and_(
                other.c.status == "todo",
                or_(
                    other.c.priority > JOBS.c.priority,
                    and_(other.c.priority == JOBS.c.priority, other.c.id < JOBS.c.id),
                ),
            ),
        ),
    )
    cond = and_(
        JOBS.c.status == "todo",
        or_(JOBS.c.scheduled_at.is_(None), JOBS.c.scheduled_at <= func.now()),
        ~blocked,
    )
    if queues:
        cond = and_(cond, JOBS.c.queue_name.in_(list(queues)))
    return cond


async def queue_idle(
    sessionmaker: async_sessionmaker[AsyncSession], queues: Sequence[str] | None = None
) -> bool:
    """Nothing is running and nothing can be claimed now (in `queues`, or anywhere)."""
    doing = exists().where(JOBS.c.status == "doing")
    if queues:
        doing = doing.where(JOBS.c.queue_name.in_(list(queues)))
    waiting = exists().where(_claimable(queues))
    async with sessionmaker() as session:
        return bool(await session.scalar(select(~doing & ~waiting)))


async def sweep_stalled(
    app: procrastinate.App,
    sessionmaker: async_sessionmaker[AsyncSession],
    stalled_seconds: float,
) -> int:
    """Release the jobs of workers without a heartbeat for `stalled_seconds`; returns how
    many were released."""
    manager = app.job_manager
    stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds)
    recovered = 0
    for job in stalled:
        assert job.id is not None
        if await _recover(sessionmaker, job.id, job.worker_id):
            recovered += 1
    await manager.prune_stalled_workers(stalled_seconds)
    return recovered


async def _recover(
    sessionmaker: async_sessionmaker[AsyncSession], job_id: int, worker_id: int | None
) -> bool:
    async with unit_of_work(sessionmaker) as session:
        # Only if it is still the stalled worker's job: it may have finished since, or
        # another sweeper may have released it (the row lock orders sweepers).
        row = (
            await session.execute(
                select(JOBS.c.queue_name)
                .where(
                    JOBS.c.id == job_id,
                    JOBS.c.status == "doing",
                    JOBS.c.worker_id.is_not_distinct_from(worker_id),
                )
                .with_for_update(skip_locked=True)
            )
        ).one_or_none()
        if row is None:
            return False
        # Give up the dedupe key first: a newer waiting job may hold it, and the move
        # back to `todo` would then violate the one-waiting-job index.
        await session.execute(update(JOBS).where(JOBS.c.id == job_id).values(queueing_lock=None))
        await session.execute(
            text("SELECT procrastinate_retry_job_v2(:id, NULL, NULL, NULL, NULL)"),
            {"id": job_id},
        )
        await mark_lost(session, [job_id], utcnow())
        await notify_waiting(session, [row.queue_name])
    return True

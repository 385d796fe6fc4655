"""Operator actions of the embedded engine: inspect, replay, cancel, count, purge.

Mixed into `EmbeddedJobQueue` (embedded.py), which keeps deferring and claiming;
`EmbeddedWorker` (embedded_worker.py) dispatches.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from cauce.core.db.base import UtcDateTime
from cauce.core.db.uow import unit_of_work
from cauce.core.errors import Conflict, NotFound
from cauce.core.jobs.attempts import attempts_for, job_ids_failed_with, replay_marker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.models import EmbeddedJob, JobAttempt
from cauce.core.jobs.ports import (
    REPLAYABLE,
    AttemptView,
    JobFilter,
    JobStatus,
    JobView,
    PurgeResult,
    QueueStats,
    Retention,
    replay_status,
)
from cauce.core.jobs.retention import Window, walk


def filtered(stmt: Select[Any], flt: JobFilter) -> Select[Any]:
    """`stmt` narrowed to the jobs `flt` names."""
    if flt.status is not None:
        stmt = stmt.where(EmbeddedJob.status == flt.status.value)
    if flt.task is not None:
        stmt = stmt.where(EmbeddedJob.task == flt.task)
    if flt.queue is not None:
        stmt = stmt.where(EmbeddedJob.queue == flt.queue)
    if flt.created_after is not None:
        stmt = stmt.where(EmbeddedJob.created_at >= flt.created_after)
    if flt.created_before is not None:
        stmt = stmt.where(EmbeddedJob.created_at < flt.created_before)
    if flt.error_class is not None:
        stmt = stmt.where(EmbeddedJob.id.in_(job_ids_failed_with(flt.error_class)))
    return stmt


def view(job: EmbeddedJob, attempts: list[AttemptView]) -> JobView:
    """A job row as operators see it."""
    return JobView(
        id=job.id,
        task=job.task,
        queue=job.queue,
        status=JobStatus(job.status),
        priority=job.priority,
        lock=job.lock,
        dedupe_key=job.dedupe_key,
        scheduled_at=job.scheduled_at,
        created_at=job.created_at,
        payload=job.payload,
        attempts=attempts,
    )


def _purgeable(
    after: int, end: int, succeeded_before: datetime, failed_before: datetime
) -> ColumnElement[bool]:
    """Jobs of the window (after, end] that finished before their status's cutoff (a
    finished job's `updated_at` is when it finished; other statuses have no cutoff).

    One comparison against a CASE, not an OR of statuses: SQLite would answer an OR from
    the status index, reading every finished job in the table for each window, where the
    id range reads the window alone.
    """
    succeeded, failed = (literal(t, UtcDateTime()) for t in (succeeded_before, failed_before))
    cutoff = case(
        (EmbeddedJob.status == JobStatus.SUCCEEDED.value, succeeded),
        (EmbeddedJob.status == JobStatus.FAILED.value, failed),
        (EmbeddedJob.status == JobStatus.CANCELLED.value, failed),
        else_=None,
    )
    return and_(EmbeddedJob.id > after, EmbeddedJob.id <= end, EmbeddedJob.updated_at < cutoff)


class EmbeddedAdmin:
    """get / list / retry / retry_many / cancel / stats / purge / check on `cauce_jobs`."""

    _sessionmaker: async_sessionmaker[AsyncSession]
    _now: Callable[[], datetime]
    _metrics: JobMetrics
    wakeup: asyncio.Event

    async def get(self, job_id: int) -> JobView | None:
        """A job with its attempts."""
        async with self._sessionmaker() as session:
            job = await session.get(EmbeddedJob, job_id)
            if job is None:
                return None
            return view(job, await attempts_for(session, job_id))

    async def list(
        self, flt: JobFilter, *, after_id: int | None = None, limit: int = 50
    ) -> list[JobView]:
        """Jobs matching `flt`, newest first, below `after_id`."""
        stmt = filtered(select(EmbeddedJob), flt).order_by(EmbeddedJob.id.desc()).limit(limit)
        if after_id is not None:
            stmt = stmt.where(EmbeddedJob.id < after_id)
        async with self._sessionmaker() as session:
            return [view(j, []) for j in (await session.scalars(stmt)).all()]

    async def _replay(self, session: AsyncSession, job_id: int, statuses: set[str]) -> bool:
        """Move one job back to todo with a fresh budget; False if it is not in `statuses`
        or another waiting job holds its dedupe key.

        One statement, so the dedupe check and the move happen under the same write lock:
        the partial unique index would otherwise abort the whole transaction.
        """
        waiting = aliased(EmbeddedJob)
        now = self._now()
        moved = (
            await session.execute(
                update(EmbeddedJob)
                .where(
                    EmbeddedJob.id == job_id,
                    EmbeddedJob.status.in_(statuses),
                    or_(
                        EmbeddedJob.dedupe_key.is_(None),
                        ~exists().where(
                            waiting.dedupe_key == EmbeddedJob.dedupe_key,
                            waiting.status == JobStatus.TODO.value,
                        ),
                    ),
                )
                .values(status=JobStatus.TODO.value, scheduled_at=None, updated_at=now)
                .returning(EmbeddedJob.task, EmbeddedJob.queue)
            )
        ).one_or_none()
        if moved is None:
            return False
        session.add(replay_marker(job_id, moved.task, moved.queue, now))
        return True

    async def retry(self, job_id: int) -> JobView:
        """Replay a failed or cancelled job with a fresh budget."""
        async with unit_of_work(self._sessionmaker) as session:
            if not await self._replay(session, job_id, {s.value for s in REPLAYABLE}):
                status = await session.scalar(
                    select(EmbeddedJob.status).where(EmbeddedJob.id == job_id)
                )
                if status is None:
                    raise NotFound(f"no job {job_id}")
                if status not in REPLAYABLE:
                    raise Conflict(
                        f"job {job_id} is {status}; only failed or cancelled jobs can be retried"
                    )
                raise Conflict(f"job {job_id}: another job with its dedupe key is waiting")
        self.wakeup.set()
        replayed = await self.get(job_id)
        assert replayed is not None
        return replayed

    async def retry_many(self, flt: JobFilter) -> int:
        """Replay every failed (or, if asked, cancelled) job matching `flt`."""
        status = replay_status(flt)
        flt = JobFilter(
            status=status,
            task=flt.task,
            queue=flt.queue,
            created_after=flt.created_after,
            created_before=flt.created_before,
            error_class=flt.error_class,
        )
        async with unit_of_work(self._sessionmaker) as session:
            ids = (await session.scalars(filtered(select(EmbeddedJob.id), flt))).all()
            count = 0
            for job_id in ids:
                count += await self._replay(session, job_id, {status.value})
        self.wakeup.set()
        return count

    async def cancel(self, job_id: int) -> JobView:
        """Cancel a waiting job."""
        async with unit_of_work(self._sessionmaker) as session:
            result = await session.execute(
                update(EmbeddedJob)
                .where(EmbeddedJob.id == job_id, EmbeddedJob.status == JobStatus.TODO.value)
                .values(status=JobStatus.CANCELLED.value, updated_at=self._now())
            )
            if getattr(result, "rowcount", 0) == 0:
                status = await session.scalar(
                    select(EmbeddedJob.status).where(EmbeddedJob.id == job_id)
                )
                if status is None:
                    raise NotFound(f"no job {job_id}")
                raise Conflict(f"job {job_id} is {status}; only waiting jobs can be cancelled")
        cancelled = await self.get(job_id)
        assert cancelled is not None
        return cancelled

    async def stats(self) -> QueueStats:
        """Depth by state and the oldest due waiting job's age."""
        now = self._now()
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(EmbeddedJob.status, func.count()).group_by(EmbeddedJob.status)
            )
            depth = {str(status): int(n) for status, n in rows.all()}
            oldest = await session.scalar(
                select(func.min(func.coalesce(EmbeddedJob.scheduled_at, EmbeddedJob.created_at)))
                .where(EmbeddedJob.status == JobStatus.TODO.value)
                .where(or_(EmbeddedJob.scheduled_at.is_(None), EmbeddedJob.scheduled_at <= now))
            )
        age = None
        if oldest is not None:
            oldest_dt = oldest if isinstance(oldest, datetime) else datetime.fromisoformat(oldest)
            if oldest_dt.tzinfo is None:
                oldest_dt = oldest_dt.replace(tzinfo=now.tzinfo)
            age = max(0.0, (now - oldest_dt).total_seconds())
        return QueueStats(depth, age)

    async def purge(self, retention: Retention, *, dry_run: bool = False) -> PurgeResult:
        """Delete finished jobs past `retention` with their attempts, a window of
        `retention.chunk` ids per write transaction (retention.py)."""
        now = self._now()
        succeeded_before, failed_before = now - retention.succeeded, now - retention.failed
        newest_cutoff = max(succeeded_before, failed_before)
        async with self._sessionmaker() as session:
            top = await session.scalar(select(func.max(EmbeddedJob.id))) or 0

        async def step(after: int) -> Window:
            # Windows are found outside the write lock: WAL readers block nobody. The
            # newest job (`top`) is never deleted: SQLite numbers a new row after the
            # highest id left, and would give the next job a deleted newest job's id.
            async with self._sessionmaker() as session:
                edge = (
                    await session.execute(
                        select(EmbeddedJob.id, EmbeddedJob.created_at)
                        .where(EmbeddedJob.id > after, EmbeddedJob.id < top)
                        .order_by(EmbeddedJob.id)
                        .offset(retention.chunk - 1)
                        .limit(1)
                    )
                ).one_or_none()
                end = edge.id if edge is not None else top - 1
                doomed = _purgeable(after, end, succeeded_before, failed_before)
                if dry_run:
                    rows = await session.execute(
                        select(EmbeddedJob.status, func.count())
                        .where(doomed)
                        .group_by(EmbeddedJob.status)
                    )
                    deleted = {str(status): int(n) for status, n in rows.all()}
                    attempts = await session.scalar(
                        select(func.count())
                        .select_from(JobAttempt)
                        .where(JobAttempt.job_id.in_(select(EmbeddedJob.id).where(doomed)))
                    )
            if not dry_run:
                # One write transaction: the write lock holds both deletes to one view of
                # the window (a job replayed since the read above no longer matches).
                async with unit_of_work(self._sessionmaker) as session:
                    result = await session.execute(
                        delete(JobAttempt)
                        .where(JobAttempt.job_id.in_(select(EmbeddedJob.id).where(doomed)))
                        .execution_options(synchronize_session=False)
                    )
                    attempts = int(getattr(result, "rowcount", 0) or 0)
                    statuses = (
                        await session.scalars(
                            delete(EmbeddedJob)
                            .where(doomed)
                            .returning(EmbeddedJob.status)
                            .execution_options(synchronize_session=False)
                        )
                    ).all()
                deleted = dict(Counter(statuses))
                for status, n in deleted.items():
                    self._metrics.purged.labels(status).inc(n)
            more = edge is not None and edge.created_at < newest_cutoff
            return Window(deleted, int(attempts or 0), end if more else None)

        return await walk(step, dry_run=dry_run)

    async def check(self) -> None:
        """The job table answers."""
        async with self._sessionmaker() as session:
            await session.execute(select(EmbeddedJob.id).limit(1))

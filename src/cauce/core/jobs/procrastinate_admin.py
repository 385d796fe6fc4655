"""Operator actions of the PostgreSQL engine: inspect, replay, cancel, count, purge.

Mixed into `ProcrastinateJobQueue` (procrastinate_engine.py). They run on the
application's SQLAlchemy sessions, using procrastinate's SQL functions where it has one,
so a status change and its attempts-table row commit together.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.db.uow import unit_of_work
from cauce.core.errors import Conflict, NotFound
from cauce.core.jobs.attempts import attempts_for, replay_marker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import (
    JobFilter,
    JobStatus,
    JobView,
    PurgeResult,
    QueueStats,
    Retention,
    replay_status,
)
from cauce.core.jobs.procrastinate_tables import (
    JOBS,
    VIEW_COLUMNS,
    filtered,
    job_status,
    job_view,
    notify_waiting,
)
from cauce.core.jobs.retention import Window, walk

# procrastinate statuses an operator may replay, and the port's name for each.
_REPLAYABLE_RAW = {
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "aborted": JobStatus.CANCELLED,
}
_REVIVE = text(
    "UPDATE procrastinate_jobs SET status = 'todo', scheduled_at = NULL,"
    " abort_requested = false WHERE id = :id AND status IN ('cancelled', 'aborted')"
)

# A purge's window: jobs (after, end] that finished before their status's cutoff, by the
# database's clock. procrastinate keeps no finish time on the job: its last event
# (`succeeded`, `failed`, `cancelled`...) is it. `aborted` is procrastinate's own
# "stopped on request" (the port's cancelled); its legacy `aborting` is left alone, as
# such a job may still be running.
_PURGEABLE = """
    j.id > :after AND j.id <= :end
    AND j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
    AND (SELECT max(e.at) FROM procrastinate_events AS e WHERE e.job_id = j.id)
        < now() - make_interval(secs => CASE WHEN j.status = 'succeeded'
                                             THEN CAST(:keep_succeeded AS double precision)
                                             ELSE CAST(:keep_failed AS double precision) END)
"""
# Where the window after `after` ends (`skip` = chunk - 1 rows further), and whether that
# job was deferred before the newest cutoff (if not, the walk stops there).
_PURGE_EDGE = text(
    """
    SELECT j.id, coalesce(
             (SELECT min(e.at) FROM procrastinate_events AS e WHERE e.job_id = j.id)
               < now() - make_interval(secs => CAST(:keep_newest AS double precision)),
             true) AS older
      FROM procrastinate_jobs AS j
     WHERE j.id > :after AND j.id <= :top
     ORDER BY j.id OFFSET :skip LIMIT 1
    """
)
# One window's delete, in one statement: the jobs (their events go by procrastinate's ON
# DELETE CASCADE, its trigger unlinks procrastinate_periodic_defers) and our attempts.
# Jobs another transaction holds (an operator replaying one) are left to the next run.
# The deletes repeat the window's id range: without it PostgreSQL joins the doomed ids
# against a scan of the whole table, in every window.
_PURGE = text(
    f"""
    WITH doomed AS (
        SELECT j.id FROM procrastinate_jobs AS j WHERE {_PURGEABLE}
           FOR UPDATE SKIP LOCKED),
    attempts AS (
        DELETE FROM job_attempts AS a USING doomed AS d
         WHERE a.job_id = d.id AND a.job_id > :after AND a.job_id <= :end
        RETURNING a.id),
    gone AS (
        DELETE FROM procrastinate_jobs AS j USING doomed AS d
         WHERE j.id = d.id AND j.id > :after AND j.id <= :end
        RETURNING j.status)
    SELECT CAST(g.status AS text) AS status, count(*) AS n,
           (SELECT count(*) FROM attempts) AS attempts
      FROM gone AS g GROUP BY g.status
    """  # noqa: S608 - a constant fragment, no input
)
_PURGE_DRY = text(
    f"""
    WITH doomed AS (SELECT j.id, j.status FROM procrastinate_jobs AS j WHERE {_PURGEABLE})
    SELECT CAST(d.status AS text) AS status, count(*) AS n,
           (SELECT count(*) FROM job_attempts AS a
             WHERE a.job_id IN (SELECT id FROM doomed)
               AND a.job_id > :after AND a.job_id <= :end) AS attempts
      FROM doomed AS d GROUP BY d.status
    """  # noqa: S608 - a constant fragment, no input
)


class ProcrastinateAdmin:
    """get / list / retry / retry_many / cancel / stats / purge / check on
    procrastinate_jobs."""

    sessionmaker: async_sessionmaker[AsyncSession]
    _metrics: JobMetrics

    async def get(self, job_id: int) -> JobView | None:
        """A job with its attempts."""
        async with self.sessionmaker() as session:
            row = (
                await session.execute(select(*VIEW_COLUMNS).where(JOBS.c.id == job_id))
            ).one_or_none()
            if row is None:
                return None
            return job_view(row, await attempts_for(session, job_id))

    async def list(
        self, flt: JobFilter, *, after_id: int | None = None, limit: int = 50
    ) -> list[JobView]:
        """Jobs matching `flt`, newest first, below `after_id`."""
        stmt = filtered(select(*VIEW_COLUMNS), flt).order_by(JOBS.c.id.desc()).limit(limit)
        if after_id is not None:
            stmt = stmt.where(JOBS.c.id < after_id)
        async with self.sessionmaker() as session:
            return [job_view(row, []) for row in (await session.execute(stmt)).all()]

    async def _replay(self, session: AsyncSession, row: Any) -> bool:
        """Move one failed or cancelled job back to todo with a fresh budget; False on a
        dedupe clash (another waiting job holds its key)."""
        try:
            # A clash is a unique violation: the savepoint keeps it from aborting the
            # whole transaction (bulk replay goes on with the next job).
            async with session.begin_nested():
                if row.status == "failed":
                    # procrastinate's own replay; a NULL retry_at runs it now.
                    await session.execute(
                        text("SELECT procrastinate_retry_job_v2(:id, NULL, NULL, NULL, NULL)"),
                        {"id": row.id},
                    )
                else:
                    # procrastinate has no function reviving a cancelled job: this is what
                    # its retry function does to a failed one (our budget lives elsewhere).
                    await session.execute(_REVIVE, {"id": row.id})
                session.add(replay_marker(row.id, row.task_name, row.queue_name, utcnow()))
                await session.flush()
        except IntegrityError:
            return False
        return True

    async def retry(self, job_id: int) -> JobView:
        """Replay a failed or cancelled job with a fresh budget."""
        async with unit_of_work(self.sessionmaker) as session:
            row = (
                await session.execute(
                    select(JOBS.c.id, JOBS.c.task_name, JOBS.c.queue_name, JOBS.c.status)
                    .where(JOBS.c.id == job_id)
                    .with_for_update()
                )
            ).one_or_none()
            if row is None:
                raise NotFound(f"no job {job_id}")
            if row.status not in _REPLAYABLE_RAW:
                raise Conflict(
                    f"job {job_id} is {job_status(row.status)}; "
                    "only failed or cancelled jobs can be retried"
                )
            if not await self._replay(session, row):
                raise Conflict(f"job {job_id}: another job with its dedupe key is waiting")
            await notify_waiting(session, [row.queue_name])
        replayed = await self.get(job_id)
        assert replayed is not None
        return replayed

    async def retry_many(self, flt: JobFilter) -> int:
        """Replay every failed (or, if asked, cancelled) job matching `flt`, skipping any
        whose dedupe key is taken."""
        status = replay_status(flt)
        flt = JobFilter(
            task=flt.task,
            queue=flt.queue,
            created_after=flt.created_after,
            created_before=flt.created_before,
            error_class=flt.error_class,
        )
        raw = [s for s, port in _REPLAYABLE_RAW.items() if port == status]
        stmt = (
            filtered(select(JOBS.c.id, JOBS.c.task_name, JOBS.c.queue_name, JOBS.c.status), flt)
            .where(JOBS.c.status.in_(raw))
            .with_for_update(of=JOBS, skip_locked=True)
        )
        async with unit_of_work(self.sessionmaker) as session:
            rows = (await session.execute(stmt)).all()
            replayed = [row for row in rows if await self._replay(session, row)]
            await notify_waiting(session, [row.queue_name for row in replayed])
        return len(replayed)

    async def cancel(self, job_id: int) -> JobView:
        """Cancel a waiting job."""
        async with unit_of_work(self.sessionmaker) as session:
            done = await session.scalar(
                text("SELECT procrastinate_cancel_job_v1(:id, false, false)"), {"id": job_id}
            )
            if done is None:
                status = await session.scalar(select(JOBS.c.status).where(JOBS.c.id == job_id))
                if status is None:
                    raise NotFound(f"no job {job_id}")
                raise Conflict(
                    f"job {job_id} is {job_status(status)}; only waiting jobs can be cancelled"
                )
        cancelled = await self.get(job_id)
        assert cancelled is not None
        return cancelled

    async def stats(self) -> QueueStats:
        """Depth by state and the oldest due waiting job's age (by the database's clock)."""
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(JOBS.c.status, func.count()).group_by(JOBS.c.status)
            )
            depth: dict[str, int] = {}
            for raw, count in rows.all():
                key = job_status(raw).value
                depth[key] = depth.get(key, 0) + int(count)
            # Scheduled jobs wait since their schedule; the others since they were
            # deferred, and ids grow with time, so the lowest id is the oldest.
            age = await session.scalar(
                text(
                    """
                    SELECT EXTRACT(EPOCH FROM now() - LEAST(
                      (SELECT min(scheduled_at) FROM procrastinate_jobs
                        WHERE status = 'todo' AND scheduled_at <= now()),
                      (SELECT min(e.at) FROM procrastinate_events e
                        WHERE e.type = 'deferred' AND e.job_id = (
                          SELECT min(id) FROM procrastinate_jobs
                           WHERE status = 'todo' AND scheduled_at IS NULL))))
                    """
                )
            )
        return QueueStats(depth, None if age is None else max(0.0, float(age)))

    async def purge(self, retention: Retention, *, dry_run: bool = False) -> PurgeResult:
        """Delete finished jobs past `retention` with their attempts, a window of
        `retention.chunk` ids per transaction (retention.py). procrastinate's own
        `delete_old_jobs` is one unbounded statement that reports nothing."""
        keep = {
            "keep_succeeded": retention.succeeded.total_seconds(),
            "keep_failed": retention.failed.total_seconds(),
        }
        async with self.sessionmaker() as session:
            top = await session.scalar(select(func.max(JOBS.c.id))) or 0

        async def step(after: int) -> Window:
            async with self.sessionmaker() as session:
                edge = (
                    await session.execute(
                        _PURGE_EDGE,
                        {
                            "after": after,
                            "top": top,
                            "skip": retention.chunk - 1,
                            "keep_newest": min(keep.values()),
                        },
                    )
                ).one_or_none()
            end = edge.id if edge is not None else top
            params = {"after": after, "end": end, **keep}
            if dry_run:
                async with self.sessionmaker() as session:
                    rows = (await session.execute(_PURGE_DRY, params)).all()
            else:
                async with unit_of_work(self.sessionmaker) as session:
                    rows = (await session.execute(_PURGE, params)).all()
            deleted: Counter[str] = Counter()
            for row in rows:
                deleted[job_status(row.status).value] += int(row.n)
            if not dry_run:
                for status, n in deleted.items():
                    self._metrics.purged.labels(status).inc(n)
            attempts = int(rows[0].attempts) if rows else 0
            more = edge is not None and bool(edge.older)
            return Window(dict(deleted), attempts, end if more else None)

        return await walk(step, dry_run=dry_run)

    async def check(self) -> None:
        """procrastinate's table answers."""
        async with self.sessionmaker() as session:
            found = await session.scalar(text("SELECT to_regclass('procrastinate_jobs')"))
        if found is None:
            raise RuntimeError("procrastinate's schema is missing: run the migrations")

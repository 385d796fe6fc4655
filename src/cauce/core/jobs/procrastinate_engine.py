"""The scale-out engine: jobs in PostgreSQL, run by procrastinate (DESIGN.md §2).

Jobs live in procrastinate's `procrastinate_jobs` table; their `args` hold
`{"payload": ..., "context": ...}` (the handler's payload and the deferring code's trace
context). Every attempt is recorded in our `job_attempts` table by the shared
`AttemptRunner`; the retry budget is counted there, never from procrastinate's own
`attempts` column. Operator actions (get, list, retry, cancel, stats) run on the
application's SQLAlchemy sessions, using procrastinate's SQL functions so that a status
change and its attempts-table row commit together. The worker is in
`procrastinate_worker.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import procrastinate
import sqlalchemy as sa
from procrastinate import exceptions as pexc
from sqlalchemy import Select, exists, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.db.uow import unit_of_work
from cauce.core.errors import Conflict, NotFound
from cauce.core.jobs.attempts import attempts_for, job_ids_failed_with, replay_marker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import (
    AttemptView,
    DeferResult,
    JobFilter,
    JobStatus,
    JobView,
    JsonDict,
    QueueStats,
)
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import current_correlation_id, inject_context

# procrastinate's tables, described only as far as we query them. A private MetaData keeps
# them out of Alembic autogenerate: the migration applies procrastinate's own schema.
_META = sa.MetaData()
_STATUS = postgresql.ENUM(
    *["todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted"],
    name="procrastinate_job_status",
    create_type=False,
)
# Event types are only compared, never read back: listing the one we use is enough.
_EVENT = postgresql.ENUM("deferred", name="procrastinate_job_event_type", create_type=False)
JOBS = sa.Table(
    "procrastinate_jobs",
    _META,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("queue_name", sa.String(128)),
    sa.Column("task_name", sa.String(128)),
    sa.Column("priority", sa.Integer),
    sa.Column("lock", sa.Text),
    sa.Column("queueing_lock", sa.Text),
    sa.Column("args", postgresql.JSONB),
    sa.Column("status", _STATUS),
    sa.Column("scheduled_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer),
    sa.Column("worker_id", sa.BigInteger),
)
EVENTS = sa.Table(
    "procrastinate_events",
    _META,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("job_id", sa.BigInteger),
    sa.Column("type", _EVENT),
    sa.Column("at", sa.DateTime(timezone=True)),
)

# procrastinate's `aborted` (and legacy `aborting`) mean "stopped on request": the port
# calls that cancelled. Our workers never request aborts, so these only appear if someone
# used procrastinate's own tools on the table.
_CANCELLED_LIKE = ("cancelled", "aborted", "aborting")
# How often a dedupe conflict is re-checked when the waiting job it hit was claimed
# between our INSERT and our lookup.
_DEDUPE_TRIES = 3


def libpq_conninfo(url: str | URL) -> str:
    """The libpq conninfo procrastinate's connector takes, from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _status(raw: str) -> JobStatus:
    return JobStatus.CANCELLED if raw in _CANCELLED_LIKE else JobStatus(raw)


_CREATED_AT = (
    select(func.min(EVENTS.c.at))
    .where(EVENTS.c.job_id == JOBS.c.id, EVENTS.c.type == "deferred")
    .scalar_subquery()
    .label("created_at")
)
_VIEW_COLUMNS = (
    JOBS.c.id,
    JOBS.c.task_name,
    JOBS.c.queue_name,
    JOBS.c.status,
    JOBS.c.priority,
    JOBS.c.lock,
    JOBS.c.queueing_lock,
    JOBS.c.scheduled_at,
    JOBS.c.args,
    _CREATED_AT,
)


def _view(row: Any, attempts: list[AttemptView]) -> JobView:
    args: JsonDict = row.args or {}
    return JobView(
        id=row.id,
        task=row.task_name,
        queue=row.queue_name,
        status=_status(row.status),
        priority=row.priority,
        lock=row.lock,
        dedupe_key=row.queueing_lock,
        scheduled_at=row.scheduled_at,
        created_at=row.created_at,
        # Jobs deferred by procrastinate's own tools have plain kwargs, not our wrapper.
        payload=args.get("payload", args),
        attempts=attempts,
    )


def _deferred_between(after: datetime | None, before: datetime | None) -> Any:
    cond = exists().where(EVENTS.c.job_id == JOBS.c.id, EVENTS.c.type == "deferred")
    if after is not None:
        cond = cond.where(EVENTS.c.at >= after)
    if before is not None:
        cond = cond.where(EVENTS.c.at < before)
    return cond


def _filtered(stmt: Select[Any], flt: JobFilter) -> Select[Any]:
    if flt.status is not None:
        if flt.status == JobStatus.CANCELLED:
            stmt = stmt.where(JOBS.c.status.in_(_CANCELLED_LIKE))
        else:
            stmt = stmt.where(JOBS.c.status == flt.status.value)
    if flt.task is not None:
        stmt = stmt.where(JOBS.c.task_name == flt.task)
    if flt.queue is not None:
        stmt = stmt.where(JOBS.c.queue_name == flt.queue)
    if flt.created_after is not None or flt.created_before is not None:
        # procrastinate_jobs has no creation time: its 'deferred' event carries it.
        stmt = stmt.where(_deferred_between(flt.created_after, flt.created_before))
    if flt.error_class is not None:
        stmt = stmt.where(JOBS.c.id.in_(job_ids_failed_with(flt.error_class)))
    return stmt


async def notify_waiting(session: AsyncSession, queues: Iterable[str]) -> None:
    """Wake listening workers on commit: procrastinate only notifies on INSERT, so a job
    moved back to `todo` (replay, crash recovery) would otherwise wait for a poll."""
    for queue in sorted(set(queues)):
        payload = json.dumps({"type": "job_inserted", "job_id": 0})
        for channel in (f"procrastinate_queue_v1#{queue}", "procrastinate_any_queue_v1"):
            await session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": channel, "payload": payload},
            )


async def _raw_connection(session: AsyncSession) -> Any:
    """The psycopg connection under `session`, inside its current transaction."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


class ProcrastinateJobQueue:
    """`JobQueue` on PostgreSQL, over procrastinate's tables."""

    engine = "procrastinate"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: TaskRegistry,
        metrics: JobMetrics,
        *,
        conninfo: str,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.conninfo = conninfo
        self._registry = registry
        self._metrics = metrics
        # Deferring runs on the caller's connection, so this app's pool is never opened:
        # the API process holds no extra connections for the queue.
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    def _deferrer(
        self,
        session_conn: Any,
        task: str,
        *,
        queue: str | None,
        priority: int,
        run_at: datetime | None,
        lock: str | None,
        dedupe_key: str | None,
    ) -> Any:
        spec = self._registry.get(task)
        return self.app.configure_task(
            task,
            queue=queue or spec.queue,
            priority=priority,
            schedule_at=run_at,
            lock=lock,
            queueing_lock=dedupe_key,
            connection=session_conn,
        )

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
        """Insert the job on the caller's transaction (see `JobQueue.defer`)."""
        if delay_seconds is not None:
            run_at = utcnow() + timedelta(seconds=delay_seconds)
        conn = await _raw_connection(session)
        deferrer = self._deferrer(
            conn,
            task,
            queue=queue,
            priority=priority,
            run_at=run_at,
            lock=lock,
            dedupe_key=dedupe_key,
        )
        args = {"payload": payload, "context": inject_context(current_correlation_id())}
        if dedupe_key is None:
            job_id: int = await deferrer.defer_async(**args)
            self._metrics.deferred.labels(task).inc()
            return DeferResult(job_id)
        for _ in range(_DEDUPE_TRIES):
            try:
                # A queueing-lock conflict is a unique violation, which would abort the
                # caller's whole transaction: the savepoint confines it to this insert.
                async with session.begin_nested():
                    # SQLAlchemy emits the SAVEPOINT lazily, on the session's next use of
                    # the connection: the insert below bypasses the session, so ask now.
                    await session.connection()
                    job_id = await deferrer.defer_async(**args)
            except pexc.AlreadyEnqueued:
                existing = await session.scalar(
                    select(JOBS.c.id).where(
                        JOBS.c.queueing_lock == dedupe_key, JOBS.c.status == "todo"
                    )
                )
                if existing is not None:
                    return DeferResult(int(existing), deduplicated=True)
                continue  # the waiting job was claimed meanwhile: the key is free again
            self._metrics.deferred.labels(task).inc()
            return DeferResult(job_id)
        raise Conflict(f"dedupe key {dedupe_key!r} keeps changing hands; try again")

    async def defer_many(
        self,
        session: AsyncSession,
        task: str,
        payloads: Sequence[JsonDict],
        *,
        queue: str | None = None,
        priority: int = 0,
    ) -> list[int]:
        """Insert many jobs of one task in one statement on the caller's transaction
        (bulk imports; no locks or dedupe keys). Not part of the port."""
        if not payloads:
            return []
        conn = await _raw_connection(session)
        deferrer = self._deferrer(
            conn, task, queue=queue, priority=priority, run_at=None, lock=None, dedupe_key=None
        )
        context = inject_context(current_correlation_id())
        ids: list[int] = await deferrer.batch_defer_async(
            *({"payload": p, "context": context} for p in payloads)
        )
        self._metrics.deferred.labels(task).inc(len(ids))
        return ids

    async def get(self, job_id: int) -> JobView | None:
        """A job with its attempts."""
        async with self.sessionmaker() as session:
            row = (
                await session.execute(select(*_VIEW_COLUMNS).where(JOBS.c.id == job_id))
            ).one_or_none()
            if row is None:
                return None
            return _view(row, await attempts_for(session, job_id))

    async def list(
        self, flt: JobFilter, *, after_id: int | None = None, limit: int = 50
    ) -> list[JobView]:
        """Jobs matching `flt`, newest first, below `after_id`."""
        stmt = _filtered(select(*_VIEW_COLUMNS), flt).order_by(JOBS.c.id.desc()).limit(limit)
        if after_id is not None:
            stmt = stmt.where(JOBS.c.id < after_id)
        async with self.sessionmaker() as session:
            return [_view(row, []) for row in (await session.execute(stmt)).all()]

    async def _replay(self, session: AsyncSession, row: Any) -> bool:
        """Move one failed job back to todo with a fresh budget; False on a dedupe clash."""
        try:
            async with session.begin_nested():
                # procrastinate_retry_job_v2 accepts `failed`; a NULL retry_at runs it now.
                await session.execute(
                    text("SELECT procrastinate_retry_job_v2(:id, NULL, NULL, NULL, NULL)"),
                    {"id": row.id},
                )
                session.add(replay_marker(row.id, row.task_name, row.queue_name, utcnow()))
                await session.flush()
        except IntegrityError:
            # Another job with the same dedupe key is already waiting.
            return False
        return True

    async def retry(self, job_id: int) -> JobView:
        """Replay a failed job with a fresh budget."""
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
            if row.status != JobStatus.FAILED.value:
                raise Conflict(
                    f"job {job_id} is {_status(row.status)}; only failed jobs can be retried"
                )
            if not await self._replay(session, row):
                raise Conflict(f"job {job_id}: another job with its dedupe key is waiting")
            await notify_waiting(session, [row.queue_name])
        view = await self.get(job_id)
        assert view is not None
        return view

    async def retry_many(self, flt: JobFilter) -> int:
        """Replay every failed job matching `flt` (skipping any whose dedupe key is taken)."""
        flt = JobFilter(
            status=JobStatus.FAILED,
            task=flt.task,
            queue=flt.queue,
            created_after=flt.created_after,
            created_before=flt.created_before,
            error_class=flt.error_class,
        )
        stmt = _filtered(
            select(JOBS.c.id, JOBS.c.task_name, JOBS.c.queue_name), flt
        ).with_for_update(of=JOBS, skip_locked=True)
        async with unit_of_work(self.sessionmaker) as session:
            rows = (await session.execute(stmt)).all()
            replayed = [row for row in rows if await self._replay(session, row)]
            await notify_waiting(session, [row.queue_name for row in replayed])
        return len(replayed)

    async def cancel(self, job_id: int) -> JobView:
        """Cancel a waiting job."""
        async with unit_of_work(self.sessionmaker) as session:
            cancelled = await session.scalar(
                text("SELECT procrastinate_cancel_job_v1(:id, false, false)"), {"id": job_id}
            )
            if cancelled is None:
                status = await session.scalar(select(JOBS.c.status).where(JOBS.c.id == job_id))
                if status is None:
                    raise NotFound(f"no job {job_id}")
                raise Conflict(
                    f"job {job_id} is {_status(status)}; only waiting jobs can be cancelled"
                )
        view = await self.get(job_id)
        assert view is not None
        return view

    async def stats(self) -> QueueStats:
        """Depth by state and the oldest due waiting job's age (by the database's clock)."""
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(JOBS.c.status, func.count()).group_by(JOBS.c.status)
            )
            depth: dict[str, int] = {}
            for raw, count in rows.all():
                key = _status(raw).value
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

    async def check(self) -> None:
        """procrastinate's table answers."""
        async with self.sessionmaker() as session:
            found = await session.scalar(text("SELECT to_regclass('procrastinate_jobs')"))
        if found is None:
            raise RuntimeError("procrastinate's schema is missing: run the migrations")

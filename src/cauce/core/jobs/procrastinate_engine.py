"""The scale-out engine: jobs in PostgreSQL, run by procrastinate (DESIGN.md §2).

Jobs live in procrastinate's `procrastinate_jobs` table; their `args` hold
`{"payload": ..., "context": ...}` (the handler's payload and the deferring code's trace
context). Every attempt is recorded in our `job_attempts` table, by triggers on
procrastinate's job table (migration 0006) and, for a failure's error, by the worker; the
retry budget is counted there (procrastinate's `attempts` column only carries the number
back to the worker). Operator actions (get, list, retry, cancel, stats) are in
`procrastinate_admin.py`, the table descriptions in `procrastinate_tables.py`, the worker
in `procrastinate_worker.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import procrastinate
import psycopg
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.errors import Conflict
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import DeferResult, JsonDict
from cauce.core.jobs.procrastinate_admin import ProcrastinateAdmin
from cauce.core.jobs.procrastinate_tables import JOBS, libpq_conninfo, notify_waiting
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import current_correlation_id, inject_context

# Re-exported: the worker, tests and benchmarks import them from here.
__all__ = ["JOBS", "ProcrastinateJobQueue", "libpq_conninfo", "notify_waiting"]

# procrastinate's own insert (the one its deferrer runs), as one statement.
_DEFER = text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority, :lock,"
    " :queueing_lock, CAST(:args AS jsonb), :scheduled_at)::procrastinate_job_to_defer_v1])"
).bindparams(bindparam("scheduled_at", type_=DateTime(timezone=True)))
# With a dedupe key: the waiting job holding the key, or else the new one, in one
# statement and without an exception (a unique violation would abort the caller's
# transaction). The insert is the row procrastinate's function writes.
_DEFER_DEDUPED = text(
    "WITH found AS ("
    " SELECT id FROM procrastinate_jobs WHERE queueing_lock = :queueing_lock"
    " AND status = 'todo'),"
    " inserted AS ("
    " INSERT INTO procrastinate_jobs"
    " (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)"
    " SELECT :queue, :task, :priority, :lock, :queueing_lock, CAST(:args AS jsonb),"
    " :scheduled_at WHERE NOT EXISTS (SELECT 1 FROM found)"
    " ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING RETURNING id)"
    " SELECT id, false AS deduplicated FROM inserted"
    " UNION ALL SELECT id, true FROM found"
).bindparams(bindparam("scheduled_at", type_=DateTime(timezone=True)))
# The same statement as psycopg runs it: the defer without a dedupe key (the hot one)
# goes straight to the session's psycopg connection, without SQLAlchemy's work per
# execution (~0.15 ms, as much as the round trip).
_DEFER_PSYCOPG = str(_DEFER.compile(dialect=PGDialect_psycopg()))  # type: ignore[no-untyped-call]
# How often the dedupe statement is tried when a concurrent transaction committed a
# waiting job with the key after the statement's snapshot.
_DEDUPE_TRIES = 3


async def _raw_connection(session: AsyncSession) -> Any:
    """The psycopg connection under `session`, inside its current transaction."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


class ProcrastinateJobQueue(ProcrastinateAdmin):
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
        """Insert the job on the caller's transaction (see `JobQueue.defer`).

        One call of procrastinate's own SQL function on the session's connection: the
        same row procrastinate's deferrer writes, without building its objects per call.
        """
        spec = self._registry.get(task)
        if delay_seconds is not None:
            run_at = utcnow() + timedelta(seconds=delay_seconds)
        params = {
            "queue": queue or spec.queue,
            "task": task,
            "priority": priority,
            "lock": lock,
            "queueing_lock": dedupe_key,
            "args": orjson.dumps(
                {"payload": payload, "context": inject_context(current_correlation_id())}
            ).decode(),
            "scheduled_at": run_at,
        }
        if dedupe_key is None:
            conn = await session.connection()
            raw = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            assert raw is not None
            try:
                row = await (await raw.execute(_DEFER_PSYCOPG, params)).fetchone()
            except psycopg.Error as exc:
                # As SQLAlchemy would have raised it (callers and the API map those).
                raise DBAPIError.instance(_DEFER_PSYCOPG, params, exc, psycopg.Error) from exc
            self._metrics.deferred.labels(task).inc()
            return DeferResult(int(row[0][0]))
        for _ in range(_DEDUPE_TRIES):
            row = (await session.execute(_DEFER_DEDUPED, params)).one_or_none()
            if row is None:
                continue  # a waiting job with the key committed meanwhile: look again
            if row.deduplicated:
                return DeferResult(int(row.id), deduplicated=True)
            self._metrics.deferred.labels(task).inc()
            return DeferResult(int(row.id))
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

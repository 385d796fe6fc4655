"""The embedded engine: jobs in SQLite, run by an in-process dispatcher.

It only ever runs inside one process (`cauce serve`), so it needs no cross-machine
coordination: one write transaction claims up to the free slots' worth of due jobs
(UPDATE ... RETURNING under SQLite's single writer) and opens their attempts; another
closes an attempt and moves its job. Any job found `doing` when the dispatcher starts was
orphaned by a crash and is released.

The dispatcher that drives it is `EmbeddedWorker` (embedded_worker.py), the statements
it runs are prebuilt in embedded_sql.py, and operator actions are in embedded_admin.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from cauce.core.db.base import utcnow
from cauce.core.db.sqlite_driver import begin_immediate
from cauce.core.db.uow import unit_of_work, writer_connection
from cauce.core.jobs.attempts import mark_lost
from cauce.core.jobs.embedded_admin import EmbeddedAdmin
from cauce.core.jobs.embedded_sql import (
    BACK_TO_TODO,
    BUDGETS,
    CANDIDATES,
    CANDIDATES_IN,
    CLOSE_ATTEMPT,
    DEFER,
    DEFER_DEDUPED,
    DEFER_DEDUPED_ONE_TRIP,
    DEFER_ONE_TRIP,
    FINISH,
    OPEN_ATTEMPT,
    TAKE,
    WAITING_WITH_KEY,
    WAITING_WITH_KEY_ONE_TRIP,
    dedupe_key_back_to_todo,
)
from cauce.core.jobs.embedded_worker import EmbeddedWorker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.models import EmbeddedJob
from cauce.core.jobs.ports import AttemptOutcome, DeferResult, JobStatus, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import (
    ClaimedJob,
    Decision,
    context_trace_id,
    count_budget,
    current_correlation_id,
    inject_context,
)

__all__ = ["EmbeddedJobQueue", "EmbeddedWorker"]

_WAKE_ON_COMMIT = "cauce.jobs.wake"


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    """Wake the dispatcher of a session that deferred a job, once it committed (one
    listener for all sessions: registering one per defer costs more than the insert)."""
    wake = session.info.pop(_WAKE_ON_COMMIT, None)
    if wake is not None:
        wake()


@event.listens_for(Session, "after_rollback")
def _forget_wake(session: Session) -> None:
    session.info.pop(_WAKE_ON_COMMIT, None)


class EmbeddedJobQueue(EmbeddedAdmin):
    """`JobQueue` on the embedded database (operator actions in embedded_admin.py)."""

    engine = "embedded"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: TaskRegistry,
        metrics: JobMetrics,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._engine: AsyncEngine = sessionmaker.kw["bind"]
        self._registry = registry
        self._metrics = metrics
        self._deferred_counts: dict[str, Counter] = {}  # `metrics.deferred` by task
        self._now = now
        self.wakeup = asyncio.Event()
        self._settling: list[tuple[ClaimedJob, Decision, asyncio.Future[None]]] = []
        self._settler: asyncio.Task[None] | None = None

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
        spec = self._registry.get(task)
        now = self._now()
        if delay_seconds is not None:
            run_at = now + timedelta(seconds=delay_seconds)
        row = {
            "queue": queue or spec.queue,
            "task": task,
            "payload": payload,
            "context": inject_context(current_correlation_id()),
            "priority": priority,
            "status": JobStatus.TODO.value,
            "lock": lock,
            "dedupe_key": dedupe_key,
            "scheduled_at": run_at,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        # The session's connection, inside its transaction: a statement compiled once,
        # in one trip to the driver (sqlite_driver.OneTripStatement), straight on the
        # driver's connection once the transaction has begun (no session in between).
        raw = writer_connection(session)
        fast = DEFER_ONE_TRIP if dedupe_key is None else DEFER_DEDUPED_ONE_TRIP
        rows = await fast.rows_on(raw, row) if raw is not None else None
        conn: AsyncConnection | None = None
        if rows is None:
            conn = await session.connection()
            rows = await fast.rows(conn, row)
        if rows is not None:
            job_id = rows[0][0] if rows else None
        else:
            assert conn is not None
            job_id = (
                await conn.execute(DEFER if dedupe_key is None else DEFER_DEDUPED, row)
            ).scalar_one_or_none()
        if job_id is None:
            key = {"dedupe_key": dedupe_key}
            found = await WAITING_WITH_KEY_ONE_TRIP.rows_on(raw, key) if raw is not None else None
            if found is not None:
                existing = found[0][0]
            else:
                conn = conn or await session.connection()
                found = await WAITING_WITH_KEY_ONE_TRIP.rows(conn, key)
                existing = (
                    found[0][0] if found is not None else await conn.scalar(WAITING_WITH_KEY, key)
                )
            assert existing is not None
            return DeferResult(existing, deduplicated=True)
        self._deferred(task).inc()
        # Wake the dispatcher once the caller's transaction is committed, not before.
        session.info[_WAKE_ON_COMMIT] = self._wake
        return DeferResult(job_id)

    def _deferred(self, task: str) -> Counter:
        count = self._deferred_counts.get(task)
        if count is None:
            count = self._deferred_counts[task] = self._metrics.deferred.labels(task)
        return count

    def _wake(self) -> None:
        self.wakeup.set()

    # -- used by the dispatcher ---------------------------------------------------

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction on a plain connection (no ORM session: the dispatcher's
        statements are prebuilt Core, ~4x cheaper per statement than a session)."""
        async with self._engine.connect() as conn:
            # Sent with the first statement where the driver allows (sqlite_driver.py).
            raw = (await conn.get_raw_connection()).dbapi_connection
            if not begin_immediate(raw, here=True):  # prebuilt statements, all short
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.rollback()
                raise
            else:
                await conn.commit()

    async def claim(
        self, worker_id: str, queues: Sequence[str] | None, limit: int = 1
    ) -> list[ClaimedJob]:
        """Take up to `limit` due jobs whose locks are free (at most one per lock), and open
        an attempt for each, in one transaction."""
        now = self._now()
        params: dict[str, Any] = {"now": now, "limit": limit * 2}
        if queues:
            params["queues"] = list(queues)
        async with self._writing() as conn:
            ids: list[int] = []
            locks: set[str] = set()
            for row in await conn.execute(CANDIDATES_IN if queues else CANDIDATES, params):
                if row.lock is not None:
                    if row.lock in locks:
                        continue  # one job per lock: the next claim takes the later one
                    locks.add(row.lock)
                ids.append(row.id)
                if len(ids) == limit:
                    break
            if not ids:
                return []
            rows = (
                await conn.execute(TAKE, {"ids": ids, "worker_id": worker_id, "now": now})
            ).all()
            budgets: dict[int, list[str]] = {}
            # A job claimed for the first time has no attempts yet: skip the lookup.
            if any(row.attempts > 1 for row in rows):
                for job_id, outcome in await conn.execute(BUDGETS, {"ids": ids}):
                    budgets.setdefault(job_id, []).append(outcome)
            opened = []
            for row in sorted(rows, key=lambda r: ids.index(r.id)):
                counted, postponed = count_budget(budgets.get(row.id, ()))
                opened.append((row, counted + 1, postponed))
            attempt_ids = (
                await conn.execute(
                    OPEN_ATTEMPT,
                    [
                        {
                            "job_id": row.id,
                            "task": row.task,
                            "queue": row.queue,
                            "attempt": attempt,
                            "started_at": now,
                            "outcome": AttemptOutcome.RUNNING.value,
                            "worker_id": worker_id,
                            "trace_id": context_trace_id(row.context or {}),
                        }
                        for row, attempt, _ in opened
                    ],
                )
            ).scalars()
            return [
                ClaimedJob(
                    row.id,
                    row.task,
                    row.queue,
                    row.payload,
                    row.context or {},
                    attempt=attempt,
                    postponed=postponed,
                    attempt_id=attempt_id,
                )
                for (row, attempt, postponed), attempt_id in zip(opened, attempt_ids, strict=True)
            ]

    async def apply(self, job: ClaimedJob, decision: Decision) -> None:
        """Close the attempt's row and move the job (done, failed, or back to todo at
        `decision.retry_at`); returns once that is committed.

        Jobs finishing together share one transaction: each call joins the batch the
        settler writes next (one write transaction per batch instead of one per job).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Read the outcome even if our caller is cancelled meanwhile (no "never retrieved").
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._settling.append((job, decision, done))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle(), name="cauce-jobs-settler")
        await asyncio.shield(done)

    async def _settle(self) -> None:
        while self._settling:
            await asyncio.sleep(0)  # jobs finishing in this turn of the loop join the batch
            batch, self._settling = self._settling, []
            try:
                await self._apply_batch([(job, decision) for job, decision, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _apply_batch(self, batch: Sequence[tuple[ClaimedJob, Decision]]) -> None:
        now = self._now()
        closes, finishes, again = [], [], []
        for job, decision in batch:
            closes.append(
                {
                    "attempt_id": job.attempt_id,
                    "finished_at": decision.finished_at or now,
                    "outcome": decision.outcome.value,
                    "error_class": decision.error_class,
                    "error_message": decision.error_message,
                    "trace_id": decision.trace_id,
                }
            )
            if decision.outcome == AttemptOutcome.SUCCEEDED:
                finishes.append({"job_id": job.id, "status": JobStatus.SUCCEEDED.value, "now": now})
            elif decision.outcome == AttemptOutcome.FAILED:
                finishes.append({"job_id": job.id, "status": JobStatus.FAILED.value, "now": now})
            else:
                again.append({"job_id": job.id, "at": decision.retry_at, "now": now})
        async with self._writing() as conn:
            await conn.execute(CLOSE_ATTEMPT, closes)
            if finishes:
                await conn.execute(FINISH, finishes)
            if again:
                await conn.execute(BACK_TO_TODO, again)

    async def release(self, job_ids: Sequence[int] | None = None) -> int:
        """Return `doing` jobs (all of them, or `job_ids`) to `todo`; mark their attempts lost."""
        async with unit_of_work(self._sessionmaker) as session:
            stmt = update(EmbeddedJob).where(EmbeddedJob.status == JobStatus.DOING.value)
            if job_ids is not None:
                stmt = stmt.where(EmbeddedJob.id.in_(list(job_ids)))
            ids = (
                (
                    await session.execute(
                        stmt.values(
                            status=JobStatus.TODO.value,
                            dedupe_key=dedupe_key_back_to_todo(),
                            worker_id=None,
                            updated_at=self._now(),
                        ).returning(EmbeddedJob.id)
                    )
                )
                .scalars()
                .all()
            )
            if ids:
                await mark_lost(session, list(ids), self._now())
        return len(ids)

    async def defer_periodic(self, task: str, payload: JsonDict, fire_at: datetime) -> None:
        """Defer one run of a schedule; the dedupe key makes it once per period."""
        async with unit_of_work(self._sessionmaker) as session:
            await self.defer(
                session, task, payload, dedupe_key=f"periodic:{task}:{int(fire_at.timestamp())}"
            )

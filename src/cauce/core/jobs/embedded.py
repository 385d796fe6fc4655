"""The embedded engine: jobs in SQLite, run by an in-process dispatcher.

It only ever runs inside one process (`cauce serve`), so it needs no cross-machine
coordination: one write transaction claims up to the free slots' worth of due jobs
(UPDATE ... RETURNING under SQLite's single writer) and opens their attempts; another
closes an attempt and moves its job. Any job found `doing` when the dispatcher starts was
orphaned by a crash and is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from croniter import croniter
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import (
    String,
    Table,
    and_,
    bindparam,
    case,
    event,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from cauce.core.db.base import UtcDateTime, utcnow
from cauce.core.db.sqlite_driver import OneTripStatement, begin_immediate
from cauce.core.db.uow import unit_of_work
from cauce.core.jobs.attempts import mark_lost
from cauce.core.jobs.embedded_admin import EmbeddedAdmin
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.models import EmbeddedJob, JobAttempt
from cauce.core.jobs.ports import AttemptOutcome, DeferResult, JobStatus, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import (
    AttemptRunner,
    ClaimedJob,
    Decision,
    context_trace_id,
    count_budget,
    current_correlation_id,
    inject_context,
)

log = structlog.get_logger("cauce.jobs")
# The dispatcher's own bookkeeping (polling, claiming, moving jobs) is left out of traces:
# traced, a poll every half second would fill the trace store with one-query traces. A
# job's attempt is traced by the runner, in the trace of the code that deferred it.
_untraced = suppress_instrumentation


def _dedupe_key_back_to_todo() -> Any:
    """A job going back to `todo` keeps its dedupe key unless another waiting job holds it.

    The key promises at most one *waiting* job; while this one ran, a new one may have
    been deferred with the same key. Both then wait, and the returning one gives up its
    key (it does the same work, so nothing is lost and the unique index holds).
    """
    other = aliased(EmbeddedJob)
    taken = (
        select(other.id)
        .where(
            other.dedupe_key == EmbeddedJob.dedupe_key,
            other.status == JobStatus.TODO.value,
            other.id != EmbeddedJob.id,
        )
        .exists()
    )
    return case((taken, None), else_=EmbeddedJob.dedupe_key)


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


_ATTEMPTS = cast(Table, JobAttempt.__table__)
_JOBS = cast(Table, EmbeddedJob.__table__)
# The dispatcher's statements, built once.
_TAKE = (
    update(_JOBS)
    .where(_JOBS.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=JobStatus.DOING.value,
        worker_id=bindparam("worker_id"),
        attempts=_JOBS.c.attempts + 1,
        updated_at=bindparam("now", type_=UtcDateTime()),
    )
    .returning(
        _JOBS.c.id,
        _JOBS.c.task,
        _JOBS.c.queue,
        _JOBS.c.payload,
        _JOBS.c.context,
        _JOBS.c.attempts,
    )
)
_HOLDER = _JOBS.alias("holder")
# Due waiting jobs whose lock no running job holds, in claim order (index
# ix_cauce_jobs_todo_order); twice the free slots, as some may share a lock.
_CANDIDATES = (
    select(_JOBS.c.id, _JOBS.c.lock)
    .where(_JOBS.c.status == JobStatus.TODO.value)
    .where(
        or_(
            _JOBS.c.scheduled_at.is_(None),
            _JOBS.c.scheduled_at <= bindparam("now", type_=UtcDateTime()),
        )
    )
    .where(
        or_(
            _JOBS.c.lock.is_(None),
            ~exists().where(
                _HOLDER.c.lock == _JOBS.c.lock, _HOLDER.c.status == JobStatus.DOING.value
            ),
        )
    )
    .order_by(_JOBS.c.priority.desc(), _JOBS.c.id)
    .limit(bindparam("limit"))
)
_CANDIDATES_IN = _CANDIDATES.where(_JOBS.c.queue.in_(bindparam("queues", expanding=True)))
_BUDGETS = (
    select(_ATTEMPTS.c.job_id, _ATTEMPTS.c.outcome)
    .where(_ATTEMPTS.c.job_id.in_(bindparam("ids", expanding=True)))
    .order_by(_ATTEMPTS.c.id)
)
_DEFER = sqlite_insert(_JOBS).returning(_JOBS.c.id)
_DEFER_DEDUPED = (
    sqlite_insert(_JOBS)
    .on_conflict_do_nothing(
        index_elements=[_JOBS.c.dedupe_key],
        # A literal, as the partial index's own WHERE: no parameter to render late.
        index_where=and_(
            _JOBS.c.status == literal_column(f"'{JobStatus.TODO.value}'"),
            _JOBS.c.dedupe_key.is_not(None),
        ),
    )
    .returning(_JOBS.c.id)
)
# The defer's columns, and its statements compiled once for one trip (sqlite_driver.py).
_DEFER_COLUMNS = [
    "queue",
    "task",
    "payload",
    "context",
    "priority",
    "status",
    "lock",
    "dedupe_key",
    "scheduled_at",
    "attempts",
    "created_at",
    "updated_at",
]
_DEFER_ONE_TRIP = OneTripStatement(_DEFER, _DEFER_COLUMNS)
_DEFER_DEDUPED_ONE_TRIP = OneTripStatement(_DEFER_DEDUPED, _DEFER_COLUMNS)
_OPEN_ATTEMPT = insert(_ATTEMPTS).returning(_ATTEMPTS.c.id, sort_by_parameter_order=True)
_CLOSE_ATTEMPT = (
    update(_ATTEMPTS)
    .where(_ATTEMPTS.c.id == bindparam("attempt_id"))
    .values(
        finished_at=bindparam("finished_at", type_=UtcDateTime()),
        outcome=bindparam("outcome"),
        error_class=bindparam("error_class"),
        error_message=bindparam("error_message"),
        trace_id=func.coalesce(bindparam("trace_id", type_=String()), _ATTEMPTS.c.trace_id),
    )
)
_FINISH = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == JobStatus.DOING.value)
    .values(
        status=bindparam("status"),
        worker_id=None,
        updated_at=bindparam("now", type_=UtcDateTime()),
    )
)
_BACK_TO_TODO = (
    update(EmbeddedJob)
    .where(EmbeddedJob.id == bindparam("job_id"), EmbeddedJob.status == JobStatus.DOING.value)
    .values(
        status=JobStatus.TODO.value,
        scheduled_at=bindparam("at", type_=UtcDateTime()),
        dedupe_key=_dedupe_key_back_to_todo(),
        worker_id=None,
        updated_at=bindparam("now", type_=UtcDateTime()),
    )
)


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
        # in one trip to the driver (sqlite_driver.OneTripStatement).
        conn = await session.connection()
        fast = _DEFER_ONE_TRIP if dedupe_key is None else _DEFER_DEDUPED_ONE_TRIP
        rows = await fast.rows(conn, row)
        if rows is not None:
            job_id = rows[0][0] if rows else None
        else:
            job_id = (
                await conn.execute(_DEFER if dedupe_key is None else _DEFER_DEDUPED, row)
            ).scalar_one_or_none()
        if job_id is None:
            existing = await conn.scalar(
                select(EmbeddedJob.id).where(
                    EmbeddedJob.dedupe_key == dedupe_key,
                    EmbeddedJob.status == JobStatus.TODO.value,
                )
            )
            assert existing is not None
            return DeferResult(existing, deduplicated=True)
        self._metrics.deferred.labels(task).inc()
        # Wake the dispatcher once the caller's transaction is committed, not before.
        session.info[_WAKE_ON_COMMIT] = self._wake
        return DeferResult(job_id)

    def _wake(self) -> None:
        self.wakeup.set()

    # -- used by the dispatcher ---------------------------------------------------

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction on a plain connection (no ORM session: the dispatcher's
        statements are prebuilt Core, ~4x cheaper per statement than a session)."""
        async with self._engine.connect() as conn:
            # Sent with the first statement where the driver allows (sqlite_driver.py).
            if not begin_immediate((await conn.get_raw_connection()).dbapi_connection):
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
            for row in await conn.execute(_CANDIDATES_IN if queues else _CANDIDATES, params):
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
                await conn.execute(_TAKE, {"ids": ids, "worker_id": worker_id, "now": now})
            ).all()
            budgets: dict[int, list[str]] = {}
            # A job claimed for the first time has no attempts yet: skip the lookup.
            if any(row.attempts > 1 for row in rows):
                for job_id, outcome in await conn.execute(_BUDGETS, {"ids": ids}):
                    budgets.setdefault(job_id, []).append(outcome)
            opened = []
            for row in sorted(rows, key=lambda r: ids.index(r.id)):
                counted, postponed = count_budget(budgets.get(row.id, ()))
                opened.append((row, counted + 1, postponed))
            attempt_ids = (
                await conn.execute(
                    _OPEN_ATTEMPT,
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
            await conn.execute(_CLOSE_ATTEMPT, closes)
            if finishes:
                await conn.execute(_FINISH, finishes)
            if again:
                await conn.execute(_BACK_TO_TODO, again)

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
                            dedupe_key=_dedupe_key_back_to_todo(),
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


class EmbeddedWorker:
    """The in-process dispatcher: claims due jobs and runs up to `concurrency` at once."""

    def __init__(
        self,
        queue: EmbeddedJobQueue,
        runner_factory: Callable[[str], AttemptRunner],
        registry: TaskRegistry,
        *,
        concurrency: int = 4,
        queues: Sequence[str] | None = None,
        poll_seconds: float = 0.5,
        graceful_seconds: float = 30.0,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:embedded"
        self._queue = queue
        self._runner = runner_factory(self.worker_id)
        self._registry = registry
        self._concurrency = concurrency
        self._queues = list(queues) if queues else None
        self._poll = poll_seconds
        self._graceful = graceful_seconds
        self._now = now
        self._running: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """The dispatcher is started and its loop is alive."""
        return self._main is not None and not self._main.done()

    async def start(self) -> None:
        """Release jobs orphaned by a crash, then start dispatching."""
        with _untraced():
            released = await self._queue.release()
        if released:
            log.warning("jobs.released_orphans", count=released)
        self._main = asyncio.create_task(self._loop(), name="cauce-embedded-dispatcher")
        if self._registry.schedules:
            self._scheduler = asyncio.create_task(self._schedule_loop(), name="cauce-scheduler")

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for `graceful_seconds`, release the rest."""
        self._stopping.set()
        self._queue.wakeup.set()
        for task in (self._main, self._scheduler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._running:
            _, pending = await asyncio.wait(list(self._running.values()), timeout=self._graceful)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        with _untraced():
            await self._queue.release()

    async def run_until_idle(self, limit_seconds: float = 30.0) -> None:
        """For tests and `cauce worker --once`: dispatch until nothing is due or running."""
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while asyncio.get_running_loop().time() < deadline:
            claimed = await self._fill()
            if not claimed and not self._running:
                return
            if self._running:
                await asyncio.wait(
                    list(self._running.values()), return_when=asyncio.FIRST_COMPLETED
                )
        raise TimeoutError("jobs still running or due after the timeout")

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._fill()
            except Exception:
                log.exception("jobs.dispatcher_error")
            self._queue.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._queue.wakeup.wait()

    async def _fill(self) -> int:
        claimed = 0
        while (free := self._concurrency - len(self._running)) > 0 and not self._stopping.is_set():
            with _untraced():
                jobs = await self._queue.claim(self.worker_id, self._queues, free)
            for job in jobs:
                task = asyncio.create_task(self._execute(job), name=f"cauce-job-{job.id}")
                self._running[job.id] = task
            claimed += len(jobs)
            if len(jobs) < free:
                break
        return claimed

    async def _execute(self, job: ClaimedJob) -> None:
        try:
            decision = await self._runner.run(job)
            with _untraced():
                await self._queue.apply(job, decision)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("jobs.execute_error", job_id=job.id)
            with _untraced():
                await self._queue.release([job.id])
        finally:
            self._running.pop(job.id, None)
            self._queue.wakeup.set()

    async def _schedule_loop(self) -> None:
        iters = {s.task: croniter(s.cron, self._now()) for s in self._registry.schedules}
        due = {s.task: iters[s.task].get_next(datetime) for s in self._registry.schedules}
        while not self._stopping.is_set():
            now = self._now()
            for sched in self._registry.schedules:
                if due[sched.task] <= now:
                    try:
                        await self._queue.defer_periodic(sched.task, sched.payload, due[sched.task])
                    except Exception:
                        log.exception("jobs.schedule_error", task=sched.task)
                        continue
                    due[sched.task] = iters[sched.task].get_next(datetime)
            wait = min((d - now).total_seconds() for d in due.values())
            await asyncio.sleep(min(max(wait, 0.05), 1.0))

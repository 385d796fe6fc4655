"""What-ifs for benchmarks/jobs_throughput.py: the changes proposed in docs/benchmarks.md,
measured before anyone applies them to src/cauce/core/jobs.

`LeanAttemptRunner` (`--what-if` worker rounds and the breakdown) has the same semantics
as `AttemptRunner` with fewer round trips and less ORM work per successful job:

1. The attempt row is inserted by ONE statement that also computes the attempt number
   (counted attempts since the last replay marker, in SQL): `INSERT ... SELECT ...
   RETURNING id, attempt`, instead of `SELECT outcome ...` (budget_state) followed by an
   ORM add + flush. The postponement count is only read when a handler postpones.
2. On success, the attempt row is completed inside the handler's own unit of work,
   before its commit: the handler's writes and "succeeded" commit together (no window
   where a crash leaves committed effects under a `running` attempt), and the separate
   `_finish` transaction (checkout, pre-ping, BEGIN, UPDATE, COMMIT) goes away.
   Failures still complete the row in their own transaction, as today.

Both statements are Core (`JobAttempt.__table__`), skipping the ORM flush and the
ORM-enabled UPDATE's session synchronisation.

`lean_defer_pg` / `lean_defer_sqlite` (breakdown, `--what-if` ingest) insert the job row of
`JobQueue.defer` (no dedupe key) through the caller's session with one cached
Core statement: on PostgreSQL procrastinate's own `procrastinate_defer_jobs_v1` SQL
function instead of procrastinate's Python deferrer on the raw connection; on SQLite a
prebuilt INSERT (the dispatcher's wake-up listener is left out: ~60 µs here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from sqlalchemy import Table, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db import utcnow
from cauce.core.db.uow import unit_of_work
from cauce.core.jobs.models import EmbeddedJob, JobAttempt
from cauce.core.jobs.ports import AttemptOutcome, JobContext, JsonDict, RetryLater
from cauce.core.jobs.registry import UnknownTask
from cauce.core.jobs.runner import (
    COUNTED,
    AttemptRunner,
    ClaimedJob,
    Decision,
    budget_state,
    current_correlation_id,
    inject_context,
)

# Core statements on the table (mapped classes type __table__ as a generic FromClause).
ATTEMPTS = cast(Table, JobAttempt.__table__)


def _start_statement(job: ClaimedJob, started_at: Any, worker_id: str, trace_id: str | None) -> Any:
    """INSERT the `running` row numbered after the attempts counted since the last replay."""
    c = ATTEMPTS.c
    last_replay = (
        select(func.coalesce(func.max(c.id), 0))
        .where(c.job_id == job.id, c.outcome == AttemptOutcome.REPLAYED.value)
        .scalar_subquery()
    )
    counted = (
        select(func.count())
        .select_from(ATTEMPTS)
        .where(
            c.job_id == job.id,
            c.id > last_replay,
            c.outcome.in_([o.value for o in COUNTED]),
        )
        .scalar_subquery()
    )
    row = select(
        literal(job.id),
        literal(job.task),
        literal(job.queue),
        counted + 1,
        literal(started_at, JobAttempt.started_at.type),
        literal(AttemptOutcome.RUNNING.value),
        literal(worker_id),
        literal(trace_id),
    )
    names = ["job_id", "task", "queue", "attempt", "started_at", "outcome", "worker_id", "trace_id"]
    return insert(ATTEMPTS).from_select(names, row).returning(c.id, c.attempt)


class LeanAttemptRunner(AttemptRunner):
    """`AttemptRunner` with the start in one statement and success in the handler's commit."""

    async def _run_in_span(self, job: ClaimedJob, span: Any) -> Decision:
        trace_id = _trace_id(span)
        async with unit_of_work(self._sessionmaker) as session:
            row = (
                await session.execute(_start_statement(job, self._now(), self.worker_id, trace_id))
            ).one()
        attempt_id, attempt = int(row[0]), int(row[1])
        self._metrics.started.labels(job.task).inc()
        start = time.perf_counter()
        try:
            spec = self._registry.get(job.task)
        except UnknownTask as exc:
            await self._finish(attempt_id, AttemptOutcome.FAILED, exc, job.task, start, span)
            return Decision(AttemptOutcome.FAILED)
        try:
            async with unit_of_work(self._sessionmaker) as session:
                ctx = JobContext(
                    job.id, job.task, job.queue, attempt, self.worker_id, session, self._queue
                )
                await spec.handler(ctx, job.payload)
                await session.execute(
                    update(ATTEMPTS)
                    .where(ATTEMPTS.c.id == attempt_id)
                    .values(finished_at=self._now(), outcome=AttemptOutcome.SUCCEEDED.value)
                )
        except asyncio.CancelledError:
            await asyncio.shield(
                self._finish(attempt_id, AttemptOutcome.LOST, None, job.task, start, span)
            )
            raise
        except RetryLater as exc:
            async with self._sessionmaker() as session:
                _counted, postponed = await budget_state(session, job.id)
            if postponed < spec.policy.max_postponements:
                decision = Decision(AttemptOutcome.POSTPONED, retry_at=exc.at)
            else:
                decision = self._after_failure(spec, attempt, exc)
            await self._finish(attempt_id, decision.outcome, exc, job.task, start, span)
            return decision
        except Exception as exc:  # noqa: BLE001 - classified by the policy, as in AttemptRunner
            decision = self._after_failure(spec, attempt, exc)
            await self._finish(attempt_id, decision.outcome, exc, job.task, start, span)
            return decision
        elapsed = time.perf_counter() - start
        self._metrics.duration.labels(job.task, AttemptOutcome.SUCCEEDED.value).observe(elapsed)
        self._metrics.succeeded.labels(job.task).inc()
        return Decision(AttemptOutcome.SUCCEEDED)


def _trace_id(span: Any) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


# A what-if defer: (session, task, payload, *, queue) -> job id.
LeanDefer = Callable[..., Awaitable[int]]

_PG_DEFER = text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority, NULL, NULL,"
    " CAST(:args AS jsonb), NULL)::procrastinate_job_to_defer_v1])"
)


async def lean_defer_pg(
    session: AsyncSession, task: str, payload: JsonDict, *, queue: str, priority: int = 0
) -> int:
    """One job on the caller's transaction via procrastinate's SQL function."""
    args = {"payload": payload, "context": inject_context(current_correlation_id())}
    ids = await session.scalar(
        _PG_DEFER,
        {"queue": queue, "task": task, "priority": priority, "args": orjson.dumps(args).decode()},
    )
    return int(ids[0])


_EMBEDDED = cast(Table, EmbeddedJob.__table__)
_SQLITE_DEFER = insert(_EMBEDDED).returning(_EMBEDDED.c.id)


async def lean_defer_sqlite(
    session: AsyncSession, task: str, payload: JsonDict, *, queue: str, priority: int = 0
) -> int:
    """One job on the caller's transaction with a prebuilt Core INSERT."""
    now = utcnow()
    row = {
        "queue": queue,
        "task": task,
        "payload": payload,
        "context": inject_context(current_correlation_id()),
        "priority": priority,
        "status": "todo",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    return int((await session.execute(_SQLITE_DEFER, row)).scalar_one())

"""One attempt of one job, the same on both engines.

The runner records the attempt, continues the deferring code's trace, runs the handler
inside its own unit of work (so what a handler writes and the jobs it defers commit
together), classifies the outcome with the task's retry policy, and completes the
attempt's row. The engine then applies the decision to its own job table.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.db.uow import unit_of_work
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.models import JobAttempt
from cauce.core.jobs.ports import AttemptOutcome, JobContext, JobQueue, JsonDict, RetryLater
from cauce.core.jobs.registry import TaskRegistry, TaskSpec, UnknownTask
from cauce.core.observability.redact import redact_text

log = structlog.get_logger("cauce.jobs")
MAX_ERROR_CHARS = 2000
# Outcomes that use up the retry budget; postponements and replay markers do not.
COUNTED = frozenset(
    {AttemptOutcome.SUCCEEDED, AttemptOutcome.RETRY, AttemptOutcome.FAILED, AttemptOutcome.LOST}
)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker has claimed: what the runner needs to run it."""

    id: int
    task: str
    queue: str
    payload: JsonDict
    context: JsonDict


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine does next with the job."""

    outcome: AttemptOutcome  # SUCCEEDED, RETRY, POSTPONED or FAILED
    retry_at: datetime | None = None


def inject_context(correlation_id: str | None) -> JsonDict:
    """The W3C trace context and correlation id of the current code, to store with a job."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if correlation_id:
        carrier["correlation_id"] = correlation_id
    return carrier


def current_correlation_id() -> str | None:
    """The request id (or job correlation id) bound in the log context, if any."""
    bound = structlog.contextvars.get_contextvars()
    value = bound.get("correlation_id") or bound.get("request_id")
    return str(value) if value else None


async def budget_state(session: AsyncSession, job_id: int) -> tuple[int, int]:
    """(counted attempts, postponements) since the job's last replay."""
    rows = (
        await session.execute(
            select(JobAttempt.outcome).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
        )
    ).scalars()
    counted = postponed = 0
    for outcome in rows:
        if outcome == AttemptOutcome.REPLAYED:
            counted = postponed = 0
        elif outcome == AttemptOutcome.POSTPONED:
            postponed += 1
        elif outcome in COUNTED:
            counted += 1
    return counted, postponed


class AttemptRunner:
    """Runs attempts for one worker."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: TaskRegistry,
        queue_port: JobQueue,
        *,
        worker_id: str,
        metrics: JobMetrics,
        tracer_provider: TracerProvider | None = None,
        now: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._queue = queue_port
        self.worker_id = worker_id
        self._metrics = metrics
        self._tracer = trace.get_tracer("cauce.jobs", tracer_provider=tracer_provider)
        self._now = now
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    async def run(self, job: ClaimedJob) -> Decision:
        """Run one attempt of `job` and decide what happens next."""
        parent = propagate.extract(job.context)
        token = otel_context.attach(parent)
        structlog.contextvars.bind_contextvars(
            job_id=job.id,
            task=job.task,
            correlation_id=job.context.get("correlation_id") or f"job-{job.id}",
        )
        try:
            with self._tracer.start_as_current_span(
                f"job {job.task}",
                kind=SpanKind.CONSUMER,
                attributes={"cauce.job.id": job.id, "cauce.job.queue": job.queue},
            ) as span:
                return await self._run_in_span(job, span)
        finally:
            otel_context.detach(token)
            structlog.contextvars.unbind_contextvars("job_id", "task", "correlation_id")

    async def _run_in_span(self, job: ClaimedJob, span: Any) -> Decision:
        async with unit_of_work(self._sessionmaker) as session:
            counted, postponed = await budget_state(session, job.id)
            attempt = JobAttempt(
                job_id=job.id,
                task=job.task,
                queue=job.queue,
                attempt=counted + 1,
                started_at=self._now(),
                outcome=AttemptOutcome.RUNNING,
                worker_id=self.worker_id,
                trace_id=_trace_id(span),
            )
            session.add(attempt)
            await session.flush()
            attempt_id = attempt.id
        self._metrics.started.labels(job.task).inc()
        start = time.perf_counter()
        try:
            spec = self._registry.get(job.task)
        except UnknownTask as exc:
            await self._finish(attempt_id, AttemptOutcome.FAILED, exc, job.task, start, span)
            return Decision(AttemptOutcome.FAILED)
        error: BaseException | None = None
        try:
            async with unit_of_work(self._sessionmaker) as session:
                ctx = JobContext(
                    job.id, job.task, job.queue, counted + 1, self.worker_id, session, self._queue
                )
                await spec.handler(ctx, job.payload)
            decision = Decision(AttemptOutcome.SUCCEEDED)
        except asyncio.CancelledError:
            # The worker is stopping: the attempt is lost, the engine releases the job.
            await asyncio.shield(
                self._finish(attempt_id, AttemptOutcome.LOST, None, job.task, start, span)
            )
            raise
        except RetryLater as exc:
            error = exc
            if postponed < spec.policy.max_postponements:
                decision = Decision(AttemptOutcome.POSTPONED, retry_at=exc.at)
            else:
                decision = self._after_failure(spec, counted + 1, exc)
        except Exception as exc:  # noqa: BLE001 - a handler failure of any kind is recorded and classified by the policy
            error = exc
            decision = self._after_failure(spec, counted + 1, exc)
        await self._finish(attempt_id, decision.outcome, error, job.task, start, span)
        return decision

    def _after_failure(self, spec: TaskSpec, attempt: int, exc: BaseException) -> Decision:
        if spec.policy.is_retryable(exc) and attempt < spec.policy.max_attempts:
            delay = spec.policy.backoff(attempt, self._rng)
            return Decision(AttemptOutcome.RETRY, retry_at=self._now() + timedelta(seconds=delay))
        return Decision(AttemptOutcome.FAILED)

    async def _finish(
        self,
        attempt_id: int,
        outcome: AttemptOutcome,
        error: BaseException | None,
        task: str,
        start: float,
        span: Any,
    ) -> None:
        elapsed = time.perf_counter() - start
        message = None
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            message = redact_text(str(error))[:MAX_ERROR_CHARS]
        async with unit_of_work(self._sessionmaker) as session:
            await session.execute(
                update(JobAttempt)
                .where(JobAttempt.id == attempt_id)
                .values(
                    finished_at=self._now(),
                    outcome=outcome,
                    error_class=_error_class(error),
                    error_message=message,
                )
            )
        self._metrics.duration.labels(task, outcome.value).observe(elapsed)
        counter = {
            AttemptOutcome.SUCCEEDED: self._metrics.succeeded,
            AttemptOutcome.FAILED: self._metrics.failed,
            AttemptOutcome.RETRY: self._metrics.retried,
            AttemptOutcome.POSTPONED: self._metrics.postponed,
        }.get(outcome)
        if counter is not None:
            counter.labels(task).inc()
        if outcome in (AttemptOutcome.FAILED, AttemptOutcome.RETRY):
            log.warning(
                f"jobs.attempt.{outcome.value}",
                error_class=_error_class(error),
                duration_ms=round(elapsed * 1000, 2),
            )


def _error_class(error: BaseException | None) -> str | None:
    if error is None:
        return None
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"


def _trace_id(span: Any) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None

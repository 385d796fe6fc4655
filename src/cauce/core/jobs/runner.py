"""One attempt of one job, the same on both engines.

The engine opens the attempt's row with the claim; the runner continues the deferring
code's trace, runs the handler inside its own unit of work (so what a handler writes and
the jobs it defers commit together) and classifies the outcome with the task's retry
policy. The engine then applies the decision to its job table and closes the attempt's
row in the same transaction (ADR 0006).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.db.uow import LazyUnitOfWork
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
    """A job a worker has claimed, and the attempt its claim opened.

    The engine writes the attempt's row in the same statement or transaction as the claim
    (ADR 0006): the embedded engine inside its claim transaction, PostgreSQL by a trigger
    on procrastinate's `todo -> doing` update. `attempt` is that row's number (attempts
    counted since the job's last replay, plus one); `postponed` the postponements since
    the last replay, or None when the engine did not look (the runner then reads it from
    the attempts table, which it needs only when a handler asks to run later).
    """

    id: int
    task: str
    queue: str
    payload: JsonDict
    context: JsonDict
    attempt: int = 1
    postponed: int | None = None
    attempt_id: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine does next with the job, and what to write in the attempt's row."""

    outcome: AttemptOutcome  # SUCCEEDED, RETRY, POSTPONED or FAILED
    retry_at: datetime | None = None
    error_class: str | None = None
    error_message: str | None = None
    trace_id: str | None = None
    finished_at: datetime | None = None


def inject_context(correlation_id: str | None) -> JsonDict:
    """The W3C trace context and correlation id of the current code, to store with a job."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if correlation_id:
        carrier["correlation_id"] = correlation_id
    return carrier


def context_trace_id(context: JsonDict) -> str | None:
    """The trace id in a job's stored `traceparent` (`00-<trace id>-<span id>-<flags>`):
    the id the attempt's span continues. The PostgreSQL trigger reads it the same way."""
    parent = context.get("traceparent")
    if not isinstance(parent, str):
        return None
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def current_correlation_id() -> str | None:
    """The request id (or job correlation id) bound in the log context, if any."""
    bound = structlog.contextvars.get_contextvars()
    value = bound.get("correlation_id") or bound.get("request_id")
    return str(value) if value else None


def count_budget(outcomes: Iterable[str]) -> tuple[int, int]:
    """(counted attempts, postponements) since the last replay, from outcomes oldest first."""
    counted = postponed = 0
    for outcome in outcomes:
        if outcome == AttemptOutcome.REPLAYED:
            counted = postponed = 0
        elif outcome == AttemptOutcome.POSTPONED:
            postponed += 1
        elif outcome in COUNTED:
            counted += 1
    return counted, postponed


async def budget_state(session: AsyncSession, job_id: int) -> tuple[int, int]:
    """(counted attempts, postponements) since the job's last replay."""
    rows = (
        await session.execute(
            select(JobAttempt.outcome).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
        )
    ).scalars()
    return count_budget(rows)


class AttemptRunner:
    """Runs attempts for one worker: traces, runs the handler, decides; the engine records.

    On the success path the runner issues no SQL of its own: the handler's unit of work
    is the only transaction it opens (the engine closes the attempt's row with the job's
    state change). A failure costs one read (the budget, on PostgreSQL) at most.
    """

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
        self._metrics.started.labels(job.task).inc()
        start = time.perf_counter()
        try:
            spec = self._registry.get(job.task)
        except UnknownTask as exc:
            return self._finish(job, Decision(AttemptOutcome.FAILED), exc, start, span)
        error: BaseException | None = None
        try:
            async with LazyUnitOfWork(self._sessionmaker) as uow:
                ctx = JobContext(
                    job.id,
                    job.task,
                    job.queue,
                    job.attempt,
                    self.worker_id,
                    uow.session,
                    self._queue,
                )
                await spec.handler(ctx, job.payload)
            decision = Decision(AttemptOutcome.SUCCEEDED)
        except asyncio.CancelledError:
            # The worker is stopping: the engine releases the job and marks the attempt lost.
            raise
        except RetryLater as exc:
            error = exc
            postponed = job.postponed
            if postponed is None:
                async with self._sessionmaker() as session:
                    postponed = (await budget_state(session, job.id))[1]
            if postponed < spec.policy.max_postponements:
                decision = Decision(AttemptOutcome.POSTPONED, retry_at=exc.at)
            else:
                decision = self._after_failure(spec, job.attempt, exc)
        except Exception as exc:  # noqa: BLE001 - a handler failure of any kind is recorded and classified by the policy
            error = exc
            decision = self._after_failure(spec, job.attempt, exc)
        return self._finish(job, decision, error, start, span)

    def _after_failure(self, spec: TaskSpec, attempt: int, exc: BaseException) -> Decision:
        if spec.policy.is_retryable(exc) and attempt < spec.policy.max_attempts:
            delay = spec.policy.backoff(attempt, self._rng)
            return Decision(AttemptOutcome.RETRY, retry_at=self._now() + timedelta(seconds=delay))
        return Decision(AttemptOutcome.FAILED)

    def _finish(
        self,
        job: ClaimedJob,
        decision: Decision,
        error: BaseException | None,
        start: float,
        span: Any,
    ) -> Decision:
        elapsed = time.perf_counter() - start
        outcome = decision.outcome
        message = None
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            message = redact_text(str(error))[:MAX_ERROR_CHARS]
        self._metrics.duration.labels(job.task, outcome.value).observe(elapsed)
        counter = {
            AttemptOutcome.SUCCEEDED: self._metrics.succeeded,
            AttemptOutcome.FAILED: self._metrics.failed,
            AttemptOutcome.RETRY: self._metrics.retried,
            AttemptOutcome.POSTPONED: self._metrics.postponed,
        }.get(outcome)
        if counter is not None:
            counter.labels(job.task).inc()
        if outcome in (AttemptOutcome.FAILED, AttemptOutcome.RETRY):
            log.warning(
                f"jobs.attempt.{outcome.value}",
                error_class=_error_class(error),
                duration_ms=round(elapsed * 1000, 2),
            )
        # The span's trace id differs from the stored one only when the deferring code
        # had no trace (the span is then a new root): the engine writes it then.
        trace_id = _trace_id(span)
        return Decision(
            outcome,
            retry_at=decision.retry_at,
            error_class=_error_class(error),
            error_message=message,
            trace_id=trace_id if trace_id != context_trace_id(job.context) else None,
            finished_at=self._now(),
        )


def _error_class(error: BaseException | None) -> str | None:
    if error is None:
        return None
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"


def _trace_id(span: Any) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None

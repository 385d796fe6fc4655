"""The attempts log, shared by both engines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db.base import utcnow
from cauce.core.jobs.models import JobAttempt
from cauce.core.jobs.ports import AttemptOutcome, AttemptView
from cauce.core.jobs.runner import Decision


async def attempts_for(session: AsyncSession, job_id: int) -> list[AttemptView]:
    """Every attempt of a job, oldest first (replay markers included)."""
    rows = (
        await session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
        )
    ).all()
    return [
        AttemptView(
            attempt=r.attempt,
            started_at=r.started_at,
            finished_at=r.finished_at,
            outcome=r.outcome,
            error_class=r.error_class,
            error_message=r.error_message,
            worker_id=r.worker_id,
            trace_id=r.trace_id,
        )
        for r in rows
    ]


async def mark_lost(session: AsyncSession, job_ids: Sequence[int], at: datetime) -> None:
    """Close the still-running attempts of jobs whose worker died or was stopped."""
    await session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id.in_(list(job_ids)), JobAttempt.outcome == AttemptOutcome.RUNNING)
        .values(outcome=AttemptOutcome.LOST.value, finished_at=at)
    )


async def close_running_attempt(session: AsyncSession, job_id: int, decision: Decision) -> None:
    """Write a failed, retried or postponed attempt's outcome and error (PostgreSQL: before
    the job's state change, whose trigger then leaves the row alone)."""
    values: dict[str, Any] = {
        "finished_at": decision.finished_at or utcnow(),
        "outcome": decision.outcome.value,
        "error_class": decision.error_class,
        "error_message": decision.error_message,
    }
    if decision.trace_id is not None:
        values["trace_id"] = decision.trace_id
    await session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.outcome == AttemptOutcome.RUNNING.value)
        .values(**values)
    )


def replay_marker(job_id: int, task: str, queue: str, at: datetime) -> JobAttempt:
    """The row that gives a job a fresh budget (the budget counts attempts after it)."""
    return JobAttempt(
        job_id=job_id,
        task=task,
        queue=queue,
        attempt=0,
        started_at=at,
        finished_at=at,
        outcome=AttemptOutcome.REPLAYED.value,
    )


def job_ids_failed_with(error_class: str) -> Select[Any]:
    """Ids of jobs whose final failure was `error_class` (a subquery for filters)."""
    return select(JobAttempt.job_id).where(
        JobAttempt.outcome == AttemptOutcome.FAILED.value, JobAttempt.error_class == error_class
    )

"""procrastinate's tables as Cauce queries them, and the helpers both the queue and the
worker share (job views, operator filters, waking workers)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Select, exists, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.jobs.attempts import job_ids_failed_with
from cauce.core.jobs.ports import AttemptView, JobFilter, JobStatus, JobView, JsonDict

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
CANCELLED_LIKE = ("cancelled", "aborted", "aborting")


def libpq_conninfo(url: str | URL) -> str:
    """The libpq conninfo procrastinate's connector takes, from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def job_status(raw: str) -> JobStatus:
    """The port's status for one of procrastinate's."""
    return JobStatus.CANCELLED if raw in CANCELLED_LIKE else JobStatus(raw)


_CREATED_AT = (
    select(func.min(EVENTS.c.at))
    .where(EVENTS.c.job_id == JOBS.c.id, EVENTS.c.type == "deferred")
    .scalar_subquery()
    .label("created_at")
)
VIEW_COLUMNS = (
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


def job_view(row: Any, attempts: list[AttemptView]) -> JobView:
    """A row of `VIEW_COLUMNS` as operators see it."""
    args: JsonDict = row.args or {}
    return JobView(
        id=row.id,
        task=row.task_name,
        queue=row.queue_name,
        status=job_status(row.status),
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


def filtered(stmt: Select[Any], flt: JobFilter) -> Select[Any]:
    """`stmt` narrowed to the jobs `flt` names."""
    if flt.status is not None:
        if flt.status == JobStatus.CANCELLED:
            stmt = stmt.where(JOBS.c.status.in_(CANCELLED_LIKE))
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

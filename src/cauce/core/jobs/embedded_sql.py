"""The embedded engine's SQL: the statements its queue runs, built once (`embedded`).

Claiming (`CANDIDATES`, `TAKE`, `BUDGETS`, `OPEN_ATTEMPT`), deferring (`DEFER...`) and
settling an attempt (`CLOSE_ATTEMPT`, `FINISH`, `BACK_TO_TODO`); a job going back to
`todo` keeps its dedupe key as `dedupe_key_back_to_todo` says.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    String,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased

from cauce.core.db.base import UtcDateTime
from cauce.core.db.sqlite_driver import OneTripStatement
from cauce.core.jobs.models import EmbeddedJob, JobAttempt
from cauce.core.jobs.ports import JobStatus


def dedupe_key_back_to_todo() -> Any:
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


_ATTEMPTS = cast(Table, JobAttempt.__table__)
_JOBS = cast(Table, EmbeddedJob.__table__)
# The dispatcher's statements, built once.
TAKE = (
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
CANDIDATES = (
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
CANDIDATES_IN = CANDIDATES.where(_JOBS.c.queue.in_(bindparam("queues", expanding=True)))
BUDGETS = (
    select(_ATTEMPTS.c.job_id, _ATTEMPTS.c.outcome)
    .where(_ATTEMPTS.c.job_id.in_(bindparam("ids", expanding=True)))
    .order_by(_ATTEMPTS.c.id)
)
DEFER = sqlite_insert(_JOBS).returning(_JOBS.c.id)
DEFER_DEDUPED = (
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
DEFER_ONE_TRIP = OneTripStatement(DEFER, _DEFER_COLUMNS)
DEFER_DEDUPED_ONE_TRIP = OneTripStatement(DEFER_DEDUPED, _DEFER_COLUMNS)
# The job waiting under a dedupe key, when the deduped defer met it (each intake group
# meets it while a delivery waits): built and compiled once, run in one trip.
WAITING_WITH_KEY = select(_JOBS.c.id).where(
    _JOBS.c.dedupe_key == bindparam("dedupe_key"),
    _JOBS.c.status == literal_column(f"'{JobStatus.TODO.value}'"),
)
WAITING_WITH_KEY_ONE_TRIP = OneTripStatement(WAITING_WITH_KEY, ["dedupe_key"])
OPEN_ATTEMPT = insert(_ATTEMPTS).returning(_ATTEMPTS.c.id, sort_by_parameter_order=True)
CLOSE_ATTEMPT = (
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
FINISH = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == JobStatus.DOING.value)
    .values(
        status=bindparam("status"),
        worker_id=None,
        updated_at=bindparam("now", type_=UtcDateTime()),
    )
)
BACK_TO_TODO = (
    update(EmbeddedJob)
    .where(EmbeddedJob.id == bindparam("job_id"), EmbeddedJob.status == JobStatus.DOING.value)
    .values(
        status=JobStatus.TODO.value,
        scheduled_at=bindparam("at", type_=UtcDateTime()),
        dedupe_key=dedupe_key_back_to_todo(),
        worker_id=None,
        updated_at=bindparam("now", type_=UtcDateTime()),
    )
)

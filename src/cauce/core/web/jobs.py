"""The operator API for jobs (scope `jobs:admin`): list, show, retry, cancel, bulk retry."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cauce.core.errors import NotFound
from cauce.core.jobs.ports import JobFilter, JobQueue, JobStatus, JobView
from cauce.core.web.auth import require_scope
from cauce.core.web.instants import ISO_8601_ONLY
from cauce.core.web.openapi import (
    MALFORMED_BODY,
    NUL_IN_URL,
    PAYLOAD_TOO_LARGE,
    VALIDATION_FAILED,
    key_problems,
    problems,
    unsupported_media_type,
)
from cauce.core.web.routing import CauceRoute
from cauce.core.web.whole_numbers import WHOLE_NUMBER_TEXT

MAX_PAGE = 200
_CURSOR_PREFIX = "j:"
_SCOPE = "jobs:admin"
_NO_SUCH_JOB = "`not_found`: no such job"

jobs_router = APIRouter(
    prefix="/v1/jobs",
    route_class=CauceRoute,
    tags=["jobs"],
    dependencies=[Depends(require_scope(_SCOPE))],
    responses=problems(
        {400: NUL_IN_URL, **key_problems(_SCOPE), 422: f"{VALIDATION_FAILED} (filters, id or body)"}
    ),
)
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The job's id")]


def encode_cursor(job_id: int) -> str:
    """The opaque cursor for the page after job `job_id`."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The job id inside a cursor; `ValueError` if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor returned by this API") from None
    if not raw.startswith(_CURSOR_PREFIX) or not raw[len(_CURSOR_PREFIX) :].isdigit():
        raise ValueError("not a cursor returned by this API")
    return int(raw[len(_CURSOR_PREFIX) :])


def _in_utc(value: datetime) -> datetime:
    """`value` in UTC; refused (`datetime_out_of_range`, a 422 naming the field) when its
    UTC time falls outside years 1 to 9999: `0001-01-01T00:00:00+14:00` parses, but
    converting it raises `OverflowError`, which the database column's binding would turn
    into a 500. The same rule as the leads' filters (`cauce.leads.field_types.in_utc`),
    which core may not import."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_range", "is outside the years 1 to 9999 once in UTC"
        ) from None


# An ISO 8601 date-time with an offset (no Unix time), held in UTC.
_Instant = Annotated[AwareDatetime, ISO_8601_ONLY, AfterValidator(_in_utc)]


class _Filters(BaseModel):
    """The filters listing and bulk retry share."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(default=None, min_length=1, max_length=128)
    queue: str | None = Field(default=None, min_length=1, max_length=128)
    created_after: _Instant | None = Field(
        default=None, description="Deferred at or after (ISO 8601 with offset)"
    )
    created_before: _Instant | None = Field(
        default=None, description="Deferred before (ISO 8601 with offset)"
    )
    error_class: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Jobs whose final failure was this exception class (module.Name)",
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> Self:
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise ValueError("created_after must be before created_before")
        return self

    def narrows(self) -> bool:
        """Whether any filter is set (bulk retry refuses to act on everything by accident)."""
        return any(
            v is not None
            for v in (
                self.task,
                self.queue,
                self.created_after,
                self.created_before,
                self.error_class,
            )
        )


class JobQuery(_Filters):
    """Query parameters of `GET /v1/jobs`."""

    status: JobStatus | None = None
    cursor: str | None = Field(
        default=None, max_length=64, description="`next_cursor` of the last page"
    )
    limit: Annotated[int, WHOLE_NUMBER_TEXT] = Field(default=50, ge=1, le=MAX_PAGE)

    @field_validator("cursor")
    @classmethod
    def _known_cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value


class BulkRetry(_Filters):
    """Body of `POST /v1/jobs/retry`: which failed (or cancelled) jobs to replay."""

    status: Literal["failed", "cancelled"] = "failed"
    all: bool = Field(
        default=False, description="Required to replay every job of `status` with no filter"
    )

    @model_validator(mode="after")
    def _deliberate(self) -> Self:
        if not self.all and not self.narrows():
            raise ValueError(
                "name at least one filter (task, queue, created_after, created_before, "
                'error_class), or send "all": true to replay every one'
            )
        return self


class AttemptOut(BaseModel):
    """One attempt of a job."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    attempt: int = Field(description="1-based within the current budget; 0 marks a replay")
    started_at: datetime
    finished_at: datetime | None
    outcome: str = Field(
        description="running, succeeded, retry, postponed, failed, lost or replayed"
    )
    error_class: str | None
    error_message: str | None
    worker_id: str | None
    trace_id: str | None


class JobOut(BaseModel):
    """A job in a listing."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: int
    task: str
    queue: str
    status: JobStatus
    priority: int
    lock: str | None
    dedupe_key: str | None
    scheduled_at: datetime | None
    created_at: datetime | None


class JobDetail(JobOut):
    """A job with its payload and every attempt."""

    payload: dict[str, Any]
    attempts: list[AttemptOut]


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    model_config = ConfigDict(extra="forbid")

    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class BulkRetried(BaseModel):
    """How many jobs bulk retry moved back to `todo`."""

    model_config = ConfigDict(extra="forbid")

    retried: int


def _queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.resources.jobs
    return queue


def _filter(f: _Filters, status: JobStatus | None) -> JobFilter:
    return JobFilter(
        status=status,
        task=f.task,
        queue=f.queue,
        created_after=f.created_after,
        created_before=f.created_before,
        error_class=f.error_class,
    )


def _detail(view: JobView) -> JobDetail:
    return JobDetail.model_validate(view, from_attributes=True)


@jobs_router.get("", response_model=JobPage, summary="List jobs")
async def list_jobs(request: Request, query: Annotated[JobQuery, Query()]) -> JobPage:
    """Jobs matching every filter given, newest first, `limit` per page."""
    after = decode_cursor(query.cursor) if query.cursor else None
    views = await _queue(request).list(
        _filter(query, query.status), after_id=after, limit=query.limit + 1
    )
    page = views[: query.limit]
    more = len(views) > query.limit
    return JobPage(
        items=[JobOut.model_validate(v, from_attributes=True) for v in page],
        next_cursor=encode_cursor(page[-1].id) if more else None,
    )


@jobs_router.post(
    "/retry",
    response_model=BulkRetried,
    summary="Replay failed jobs by filter",
    responses=problems(
        {
            400: [NUL_IN_URL, MALFORMED_BODY],
            413: PAYLOAD_TOO_LARGE,
            415: unsupported_media_type("JSON"),
        }
    ),
)
async def retry_jobs(request: Request, body: BulkRetry) -> BulkRetried:
    """Give every failed (or cancelled) job matching the filters a fresh attempt budget.

    Jobs whose dedupe key another waiting job holds are skipped.
    """
    count = await _queue(request).retry_many(_filter(body, JobStatus(body.status)))
    return BulkRetried(retried=count)


@jobs_router.get(
    "/{job_id}",
    response_model=JobDetail,
    summary="A job with its attempts",
    responses=problems({404: _NO_SUCH_JOB}),
)
async def get_job(request: Request, job_id: JobId) -> JobDetail:
    """The job, its payload, and every attempt with its outcome and error."""
    view = await _queue(request).get(job_id)
    if view is None:
        raise NotFound(f"no job {job_id}")
    return _detail(view)


@jobs_router.post(
    "/{job_id}/retry",
    response_model=JobDetail,
    summary="Replay a failed or cancelled job",
    responses=problems(
        {
            404: _NO_SUCH_JOB,
            409: "`conflict`: the job is not failed or cancelled, or another job with its dedupe "
            "key waits",
        }
    ),
)
async def retry_job(request: Request, job_id: JobId) -> JobDetail:
    """Move the job back to `todo` with a fresh attempt budget."""
    return _detail(await _queue(request).retry(job_id))


@jobs_router.post(
    "/{job_id}/cancel",
    response_model=JobDetail,
    summary="Cancel a waiting job",
    responses=problems(
        {404: _NO_SUCH_JOB, 409: "`conflict`: the job is already running or finished"}
    ),
)
async def cancel_job(request: Request, job_id: JobId) -> JobDetail:
    """Cancel a job that has not started; a running job finishes its attempt."""
    return _detail(await _queue(request).cancel(job_id))

"""How the runner's decision on an attempt reaches procrastinate.

The procrastinate task function (`ProcrastinateWorker._run_job`) raises one of the
signals below; procrastinate hands it to the retry strategy, which turns it into
procrastinate's own decision: `Fail` -> `failed`, `Reschedule` -> back to `todo` at the
decided time, `Release` -> back to `todo` shortly. Returning normally is success.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import procrastinate
from procrastinate import jobs as pjobs

from cauce.core.db.base import utcnow

# Pause before re-running a job whose attempt could not even be recorded.
RELEASE_SECONDS = 1.0


class Reschedule(Exception):
    """The runner decided on another attempt (retry or postponement) at `retry_at`."""

    def __init__(self, retry_at: datetime | None) -> None:
        super().__init__(f"run again at {retry_at}")
        self.retry_at = retry_at


class Fail(Exception):
    """The runner decided the job has failed for good (the error is in job_attempts)."""


class Release(Exception):
    """The attempt could not run at all (e.g. the database hiccuped): release the job."""


def not_a_decision(record: logging.LogRecord) -> bool:
    """Drop procrastinate's error line (with traceback and payload) for a job our runner
    failed on purpose: the runner already logged `jobs.attempt.failed` with the cause."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, Fail)


class DecisionStrategy(procrastinate.BaseRetryStrategy):
    """Turns the runner's decision (carried by our signals) into procrastinate's."""

    def get_retry_decision(
        self, *, exception: BaseException, job: pjobs.Job
    ) -> procrastinate.RetryDecision | None:
        if isinstance(exception, Fail):
            return None
        if isinstance(exception, Reschedule):
            return procrastinate.RetryDecision(retry_at=exception.retry_at or utcnow())
        if isinstance(exception, Release):
            return procrastinate.RetryDecision(
                retry_at=utcnow() + timedelta(seconds=RELEASE_SECONDS)
            )
        # Cancelled: the worker is shutting down and gave up waiting. Back to todo now.
        return procrastinate.RetryDecision(retry_at=utcnow())

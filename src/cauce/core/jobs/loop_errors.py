"""How a job loop (the in-process dispatcher, procrastinate's worker and their sweepers)
logs an error of one round: a database that is not answering is one compact warning every
few seconds, as the loops fail every round until it is back; anything else, the round's
event with its traceback."""

from __future__ import annotations

import structlog

from cauce.core.db.unavailable import first_line
from cauce.core.observability.logging import LogThrottle

log = structlog.get_logger("cauce.jobs")

# While the database is not answering, one warning per loop this often, not a traceback.
UNAVAILABLE_LOG_SECONDS = 5.0


def log_round_error(
    throttle: LogThrottle,
    event: str,
    cause: BaseException | None,
    key: str,
    **fields: object,
) -> None:
    """Log the error being handled: `cause` is the error saying the database is not
    answering (None: a bug, logged as `event` with its traceback), `key` what `throttle`
    counts it under. Call it inside the `except` block."""
    if cause is None:
        log.exception(event, **fields)
        return
    suppressed = throttle.admit(key)
    if suppressed is not None:
        log.warning(
            "jobs.database_unavailable",
            during=event,
            error_class=type(cause).__name__,
            reason=first_line(cause),
            suppressed=suppressed,
        )

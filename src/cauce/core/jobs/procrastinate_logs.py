"""procrastinate's and psycopg's pool's own log lines while PostgreSQL is not answering.

A worker whose database went away for a few seconds logged, besides Cauce's own
`jobs.database_unavailable` warning (`loop_errors`), procrastinate's ERROR lines with a
5 KB traceback each (its listener and side tasks failing, then the worker stopping) and
one psycopg pool warning per connection attempt and per connection discarded (every
0.5-1 s while down): a blip of a few seconds was ~20 lines, two of them tracebacks of no
use, as the cause is known. `OutageLogs` keeps each of them to one line, a warning
without its traceback, at most once per `UNAVAILABLE_LOG_SECONDS` per kind, saying how
many like it were left out. Any other record of theirs passes as it is: a bug keeps its
traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg
from procrastinate.exceptions import ConnectorException

from cauce.core.db.unavailable import database_unavailable, first_line
from cauce.core.jobs.loop_errors import UNAVAILABLE_LOG_SECONDS
from cauce.core.observability.logging import LogThrottle

# The loggers `OutageLogs` is put on (a logger's filters see only the records logged on
# it, not its children's: procrastinate's worker logs on `procrastinate.worker.<name>`,
# which `watch` is given as well).
WATCHED = ("procrastinate", "procrastinate.worker", "procrastinate.utils", "psycopg.pool")


def unavailable_cause(exc: BaseException | None) -> BaseException | None:
    """The error behind `exc` that says the database is not answering (procrastinate
    wraps psycopg's in a `ConnectorException`), or None: a bug, logged with its traceback."""
    if exc is None:
        return None
    if database_unavailable(exc):
        return exc
    cause = exc.__cause__
    if (
        isinstance(exc, ConnectorException)
        and isinstance(cause, psycopg.OperationalError)
        and _connection_lost(cause)
    ):
        return cause
    return None


# SQLSTATEs of a server that went away or is not taking connections (an administrator's
# or a crash's shutdown, starting up); class 08 is a connection exception.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """psycopg's error of a connection that failed or broke (no SQLSTATE: the server never
    answered), not of a statement the server refused (a deadlock, a lock or statement
    timeout, a cancelled query are OperationalErrors too, and keep their traceback)."""
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _SERVER_GONE


class OutageLogs(logging.Filter):
    """Compacts and throttles procrastinate's and psycopg pool's records of a database
    that is not answering (module doc)."""

    def __init__(
        self, interval: float = UNAVAILABLE_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._throttle = LogThrottle(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "psycopg.pool":
            # Its warnings are all about connections (attempts failed, connections
            # discarded as broken); errors and anything at other levels pass.
            if record.levelno != logging.WARNING:
                return True
            return self._admit(record, f"pool:{record.msg}", None)
        if not record.name.startswith("procrastinate"):
            return True
        cause = unavailable_cause(record.exc_info[1] if record.exc_info else None)
        if cause is None:
            return True
        return self._admit(record, f"procrastinate:{record.msg}", cause)

    def _admit(self, record: logging.LogRecord, key: str, cause: BaseException | None) -> bool:
        suppressed = self._throttle.admit(key)
        if suppressed is None:
            return False
        message = record.getMessage().strip()
        if cause is not None:
            message = f"{message} ({type(cause).__name__}: {first_line(cause)})"
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        if suppressed:
            message = f"{message} ({suppressed} like it left out)"
        record.msg = message
        record.args = None
        return True


# One for the process: the throttle is shared by every worker and pool in it.
_OUTAGE_LOGS = OutageLogs()


def watch(*loggers: logging.Logger) -> None:
    """Put the process's `OutageLogs` on `WATCHED` and on `loggers` (idempotent)."""
    for logger in (*(logging.getLogger(name) for name in WATCHED), *loggers):
        if _OUTAGE_LOGS not in logger.filters:
            logger.addFilter(_OUTAGE_LOGS)


__all__ = ["WATCHED", "OutageLogs", "unavailable_cause", "watch"]

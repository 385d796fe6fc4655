"""Which database errors mean "the database is not answering" (retry later), as opposed
to a bug: shared by the HTTP layer (503, one throttled warning) and the job dispatcher."""

from __future__ import annotations

import re
import sqlite3

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLite's messages for a database that is busy or cannot be written now, as opposed to
# a statement that is wrong.
_SQLITE_UNAVAILABLE = re.compile(
    r"locked|busy|disk|i/o|unable to open|readonly|out of memory|interrupted", re.IGNORECASE
)


def database_unavailable(exc: BaseException) -> bool:
    """A lost connection (PostgreSQL restarted, the network dropped it), a database that
    is not answering ("database is locked" past SQLite's busy timeout, connection
    refused, a full disk), or no connection free in the pool within its timeout (every
    one busy with slow work): the caller can retry, so 503, not 500. Everything was
    rolled back."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc.orig, sqlite3.OperationalError):
        # SQLite reports a bug (no such column, a syntax error, too many variables) as an
        # OperationalError too: that is a 500 with its traceback, not an outage.
        return _SQLITE_UNAVAILABLE.search(str(exc.orig)) is not None
    return isinstance(exc, OperationalError)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The driver's message (or the error's), first line, at most `limit` characters."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().split("\n", 1)[0][:limit]


__all__ = ["database_unavailable", "first_line"]

"""Which database errors mean "the database is not answering" (retry later), as opposed
to a bug: shared by the HTTP layer (503, one throttled warning) and the job dispatcher."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


def database_unavailable(exc: BaseException) -> bool:
    """A lost connection (PostgreSQL restarted, the network dropped it), a database that
    is not answering ("database is locked" past SQLite's busy timeout, connection
    refused, a full disk), or no connection free in the pool within its timeout (every
    one busy with slow work): the caller can retry, so 503, not 500. Everything was
    rolled back."""
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError)
    )


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The driver's message (or the error's), first line, at most `limit` characters."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().split("\n", 1)[0][:limit]


__all__ = ["database_unavailable", "first_line"]

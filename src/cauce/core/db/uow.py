"""The unit of work: the one place that commits (DESIGN.md §4.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from cauce.core.db.sqlite_driver import begin_immediate

_WRITER = "cauce.writer"
_SHORT = "cauce.short_statements"
_DRIVER_CONNECTION = "cauce.driver_connection"


@event.listens_for(Session, "after_begin")
def _begin_immediate(session: Session, _transaction: Any, connection: Any) -> None:
    """On SQLite a unit of work takes the write lock with its first statement.

    A deferred transaction that reads, then writes, fails at once with "database is
    locked" (SQLITE_BUSY_SNAPSHOT, which the busy timeout does not wait out) when another
    writer committed in between; `BEGIN IMMEDIATE` makes it wait its turn instead. Only
    units of work are writers: read-only sessions keep WAL's concurrent readers.
    """
    if (
        not session.info.get(_WRITER)
        or connection.dialect.name != "sqlite"
        or getattr(_transaction, "nested", False)  # a savepoint: the lock is held already
    ):
        return
    dbapi_connection = connection.connection.dbapi_connection
    # Sent with the first statement where the driver allows (sqlite_driver.py).
    if begin_immediate(dbapi_connection, here=bool(session.info.get(_SHORT))):
        session.info[_DRIVER_CONNECTION] = dbapi_connection
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@event.listens_for(Session, "after_transaction_end")
def _forget_driver_connection(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the session's own transaction, not a savepoint
        session.info.pop(_DRIVER_CONNECTION, None)


def writer_connection(session: AsyncSession) -> Any | None:
    """The driver connection of `session`'s open write transaction on SQLite (a unit of
    work's, once its session holds a connection; its first statement, whichever runs
    it, takes the write lock), for prebuilt statements that skip the session
    (`sqlite_driver.OneTripStatement`); None otherwise (no connection yet, PostgreSQL, a
    read-only session): then ask `session.connection()`."""
    return session.info.get(_DRIVER_CONNECTION)


_ON_COMMIT = "cauce.on_commit"


def on_commit(session: AsyncSession | Session, hook: Callable[[], None]) -> None:
    """Call `hook` once `session`'s transaction has committed; never if it rolls back.

    For what may only be known once the rows are (a cache of what was read or written, a
    count of what was stored). Any rollback drops every pending hook, a savepoint's
    included: what the hooks describe may have been undone with it.
    """
    session.info.setdefault(_ON_COMMIT, []).append(hook)


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the commit is to come
        return
    for hook in session.info.pop(_ON_COMMIT, ()):
        hook()


@event.listens_for(Session, "after_soft_rollback")
def _drop_on_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_ON_COMMIT, None)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession], *, short: bool = False
) -> AsyncIterator[AsyncSession]:
    """Yield a session; commit when the block succeeds, roll back when it raises.

    Application code only `flush()`es; the request or job boundary owns the commit, so the
    business rows and the jobs deferred with them are written together or not at all.

    `short`: every statement of the block is short (bounded by its input, as an intake's
    are); on SQLite they run on the event loop's thread instead of a trip to the
    driver's (sqlite_driver.py). Leave it off for anything that may scan or delete a lot.
    """
    async with sessionmaker() as session:
        session.info[_WRITER] = True
        session.info[_SHORT] = short
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


class LazyUnitOfWork:
    """A unit of work whose session is opened on first use (`session()`): a block that
    never touches the database costs no session at all (e.g. a job whose handler only
    calls out). Commits when the block succeeds, rolls back when it raises."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None

    def session(self) -> AsyncSession:
        """The unit of work's session, opened now if it is not yet."""
        if self._session is None:
            self._session = self._sessionmaker()
            self._session.info[_WRITER] = True
        return self._session

    async def __aenter__(self) -> LazyUnitOfWork:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if exc_type is None:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()

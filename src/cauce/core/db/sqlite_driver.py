"""SQLite through aiosqlite with one trip to the driver's thread per statement.

aiosqlite runs each SQLite call on a thread of its own and hands the result back to the
event loop; SQLAlchemy's adapter makes up to four such trips per statement (create the
cursor, execute, fetch the rows, close the cursor) and one for every commit and rollback,
even with no transaction open (the pool rolls back every connection it gets back). Each
trip waits for the event loop's next turn, and inside a write transaction it waits
holding SQLite's one write lock: on a busy server those waits, not SQLite, set the rate.

This adapter keeps SQLAlchemy's aiosqlite dialect and changes the trips only:

- a statement's work (execute, fetch every row, close) is one trip;
- a commit or rollback with no transaction open is no trip at all;
- a unit of work's `BEGIN IMMEDIATE` (uow.py) goes in the same trip as its first
  statement (`begin_immediate`), instead of a trip of its own.

Rows are fetched whole, as SQLAlchemy's adapter already does for a plain cursor; a
server-side cursor (`stream()`) keeps the stock behaviour.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"


def _run(
    conn: sqlite3.Connection, begin: bool, sql: str, params: Any, many: bool
) -> tuple[Any, list[Any], int, int | None]:
    """On aiosqlite's thread: the statement (after `BEGIN IMMEDIATE` when asked) and all
    it returns."""
    if begin:
        conn.execute(BEGIN_IMMEDIATE)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class _OneTripCursor:
    """The part of aiosqlite's cursor SQLAlchemy's adapter uses, one trip per execute."""

    arraysize = 1

    def __init__(self, owner: OneTripConnection) -> None:
        self._owner = owner
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def _trip(self, sql: str, params: Any, many: bool) -> _OneTripCursor:
        driver = self._owner.driver
        begin = self._owner.take_begin()
        result = await driver._execute(_run, driver._conn, begin, sql, params, many)  # type: ignore[no-untyped-call]
        (self.description, self._rows, self.rowcount, self.lastrowid) = result
        return self

    async def execute(self, sql: str, parameters: Any = None) -> _OneTripCursor:
        return await self._trip(sql, () if parameters is None else parameters, False)

    async def executemany(self, sql: str, parameters: Any) -> _OneTripCursor:
        return await self._trip(sql, parameters, True)

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    def close(self) -> None:
        self._rows = []


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    # Our cursor's close() is a plain call: closing costs no trip.
    _awaitable_cursor_close = False

    def _make_new_cursor(self, connection: Any) -> Any:
        return _OneTripCursor(self._adapt_connection)  # type: ignore[arg-type]

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter with the trips above."""

    __slots__ = ("_begin_pending",)
    _cursor_cls = _Cursor

    def __init__(self, dbapi: Any, connection: aiosqlite.Connection) -> None:
        super().__init__(dbapi, connection)  # type: ignore[arg-type]
        self._begin_pending = False

    @property
    def driver(self) -> aiosqlite.Connection:
        """The aiosqlite connection underneath."""
        return self._connection  # type: ignore[return-value]

    def begin_immediate(self) -> None:
        """Take the write lock with the next statement (in its trip)."""
        self._begin_pending = True

    def take_begin(self) -> bool:
        """Whether the statement about to run must open the write transaction first."""
        pending, self._begin_pending = self._begin_pending, False
        return pending

    def _in_transaction(self) -> bool:
        raw = self.driver._connection
        return raw is not None and raw.in_transaction

    def cursor(self, server_side: bool = False) -> Any:
        if server_side and self.take_begin():
            driver = self.driver
            await_(driver._execute(driver._conn.execute, BEGIN_IMMEDIATE))  # type: ignore[no-untyped-call]
        return super().cursor(server_side)

    def commit(self) -> None:
        self._begin_pending = False
        if self._in_transaction():
            super().commit()

    def rollback(self) -> None:
        self._begin_pending = False
        if self._in_transaction():
            super().rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module for `create_async_engine(..., module=...)`."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock.driver_connection)


def one_trip_dbapi() -> OneTripDBAPI:
    """A fresh DB-API module object for one engine."""
    return OneTripDBAPI(aiosqlite, sqlite3)


def begin_immediate(dbapi_connection: Any) -> bool:
    """Ask a connection of this adapter to take the write lock with its next statement;
    False for any other connection (the caller then runs `BEGIN IMMEDIATE` itself)."""
    if isinstance(dbapi_connection, OneTripConnection):
        dbapi_connection.begin_immediate()
        return True
    return False

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
  statement (`begin_immediate`), instead of a trip of its own;
- writers of one engine in one process queue for the write lock on an asyncio lock
  (`wait_turn`) rather than in SQLite's sleep-and-retry busy handler;
- a write transaction takes the lock on the event loop's thread when it is free, and
  commits there; a unit of work whose statements are all short (intake's) runs them
  there too: no trip at all (`_runs_here`).

Rows are fetched whole, as SQLAlchemy's adapter already does for a plain cursor; a
server-side cursor (`stream()`) keeps the stock behaviour.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util.concurrency import await_

BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
# sqlite3's own default, when the engine passes no `timeout`.
DEFAULT_BUSY_TIMEOUT = 5.0


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


# Inside a write transaction the connection holds, no statement can wait for a lock, and
# a trip to aiosqlite's thread costs ~50 us of CPU and a turn of the event loop, against
# ~2 us for SQLite to run a short statement: a unit of work that says its statements are
# short (`begin_immediate(..., here=True)`: intake, the job queue) runs them on the
# loop's thread instead (measured on a busy server: the loop sat idle ~23 % of the time
# waiting for trips). Other units of work keep the trips: a purge's DELETE may be long.
# The connection is opened with check_same_thread=False for this (engine.py), and a
# statement runs under the adapter's `_execute_mutex`, which keeps any other use out.
# Long ones still take the trip, so the loop keeps serving meanwhile: an executemany of
# more rows than this (a 1,000-lead batch writes thousands), or parameters holding more
# text than this (a batch's key look-up sends every key as one JSON array).
_HERE_MAX_ROWS = 256
_HERE_MAX_CHARS = 65_536


def _short(params: Any, many: bool) -> bool:
    """Whether a statement with these parameters is short enough to run here."""
    if many:
        return len(params) <= _HERE_MAX_ROWS
    values = params.values() if isinstance(params, dict) else params
    return sum(len(v) for v in values if isinstance(v, str | bytes)) <= _HERE_MAX_CHARS


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
        result = await self._owner.trip(sql, params, many)
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

    __slots__ = ("_begin_pending", "_busy_timeout", "_gate", "_here", "holds_write_lock")
    _cursor_cls = _Cursor

    def __init__(
        self, dbapi: OneTripDBAPI, connection: aiosqlite.Connection, busy_timeout: float
    ) -> None:
        super().__init__(dbapi, connection)  # type: ignore[arg-type]
        self._begin_pending = False
        self._busy_timeout = busy_timeout
        # The engine's writer gate while this connection holds (or waits to take) the
        # write lock; None otherwise.
        self._gate: asyncio.Lock | None = None
        # Set once this connection's `BEGIN IMMEDIATE` went through, until its commit or
        # rollback: no statement of the transaction can then wait for a lock.
        self.holds_write_lock = False
        # This write transaction's statements are short (`begin_immediate`).
        self._here = False

    @property
    def driver(self) -> aiosqlite.Connection:
        """The aiosqlite connection underneath."""
        return self._connection  # type: ignore[return-value]

    def begin_immediate(self, *, here: bool = False) -> None:
        """Take the write lock with the next statement; `here`: the transaction's
        statements are short, and run on the loop's thread (`_HERE_MAX_ROWS`)."""
        self._begin_pending = True
        self._here = here

    def take_begin(self) -> bool:
        """Whether the statement about to run must open the write transaction first."""
        pending, self._begin_pending = self._begin_pending, False
        return pending

    async def wait_turn(self) -> None:
        """Before `BEGIN IMMEDIATE`: wait for this process's other writers on the engine.

        SQLite makes a writer that finds the lock taken sleep and retry (1, 2, 5, 10 ...
        up to 100 ms at a time), so under concurrent writes the lock often sits free
        while the next writer sleeps. In one process the writers queue here instead and
        each takes the lock the moment the previous one commits; SQLite's busy timeout
        still covers writers in other processes. Waiting longer than that timeout fails
        as SQLite would: "database is locked".
        """
        gate = self.dbapi.gate()
        try:
            async with asyncio.timeout(self._busy_timeout):
                await gate.acquire()
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked") from None
        self._gate = gate

    async def trip(
        self, sql: str, params: Any, many: bool, *, short: bool = False
    ) -> tuple[Any, list[Any], int, Any]:
        """One trip to aiosqlite's thread for a statement, opening the write transaction
        first (after waiting for this process's turn) when a unit of work asked for it;
        no trip when the transaction holds the lock and the statement is short (its
        unit of work said so, or `short`)."""
        driver = self.driver
        begin = self.take_begin()
        if begin:
            await self.wait_turn()
            try:
                begin = not self._begin_here()
            except BaseException:
                self.after_begin()
                raise
        if not begin and self._runs_here(params, many, short):
            return _run(driver._conn, False, sql, params, many)
        try:
            return await driver._execute(_run, driver._conn, begin, sql, params, many)  # type: ignore[no-any-return,no-untyped-call]
        finally:
            if begin:
                self.after_begin()

    def _runs_here(self, params: Any, many: bool, short: bool) -> bool:
        """Whether a statement runs on the loop's thread (see `_HERE_MAX_ROWS`)."""
        return (
            self.holds_write_lock
            and self.in_transaction()
            and (short or (self._here and _short(params, many)))
        )

    def _begin_here(self) -> bool:
        """Try `BEGIN IMMEDIATE` on the loop's thread without waiting: True when the
        write lock is taken. This process's writers already took turns (`wait_turn`),
        so only another process can hold it; then False, and the trip takes the lock
        with SQLite's busy timeout, off the loop's thread."""
        conn = self.driver._conn
        busy_ms = round(self._busy_timeout * 1000)
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute(BEGIN_IMMEDIATE)
        except sqlite3.OperationalError:  # locked by another process (or worse: the trip
            return False  # then waits, or raises, as SQLite says)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        self.after_begin()
        return True

    def after_begin(self) -> None:
        """After the trip that ran `BEGIN IMMEDIATE`: the lock is held, or, when the trip
        failed before taking it, the gate is passed on at once."""
        if self.in_transaction():
            self.holds_write_lock = True
        else:
            self._end_write()

    def _end_write(self) -> None:
        self._begin_pending = self.holds_write_lock = self._here = False
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()

    def in_transaction(self) -> bool:
        """Whether SQLite has a transaction open on this connection."""
        raw = self.driver._connection
        return raw is not None and raw.in_transaction

    def cursor(self, server_side: bool = False) -> Any:
        if server_side and self.take_begin():
            driver = self.driver
            await_(self.wait_turn())
            try:
                await_(driver._execute(driver._conn.execute, BEGIN_IMMEDIATE))  # type: ignore[no-untyped-call]
            finally:
                self.after_begin()
        return super().cursor(server_side)

    def commit(self) -> None:
        try:
            if self.in_transaction():
                if self.holds_write_lock:  # here: see `_HERE_MAX_ROWS`
                    self._end_here(self.driver._conn.commit)
                else:
                    super().commit()
        finally:
            self._end_write()

    def rollback(self) -> None:
        try:
            if self.in_transaction():
                if self.holds_write_lock:
                    self._end_here(self.driver._conn.rollback)
                else:
                    super().rollback()
        finally:
            self._end_write()

    def _end_here(self, end: Any) -> None:
        try:
            end()
        except Exception as error:  # noqa: BLE001 - translated as the adapter does
            self._handle_exception(error)

    def close(self) -> None:
        self._end_write()
        super().close()

    def terminate(self) -> None:
        self._end_write()
        super().terminate()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module for `create_async_engine(..., module=...)`."""

    def __init__(self, aiosqlite_module: Any, sqlite_module: Any) -> None:
        super().__init__(aiosqlite_module, sqlite_module)
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def gate(self) -> asyncio.Lock:
        """The writer gate of this engine in the running event loop."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Lock()
        return gate

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        busy_timeout = float(kw.get("timeout", DEFAULT_BUSY_TIMEOUT))
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock.driver_connection, busy_timeout)


def one_trip_dbapi() -> OneTripDBAPI:
    """A fresh DB-API module object for one engine."""
    return OneTripDBAPI(aiosqlite, sqlite3)


def begin_immediate(dbapi_connection: Any, *, here: bool = False) -> bool:
    """Ask a connection of this adapter to take the write lock with its next statement
    (`here`: the transaction's statements are all short, see `_HERE_MAX_ROWS`); False
    for any other connection (the caller then runs `BEGIN IMMEDIATE` itself)."""
    if isinstance(dbapi_connection, OneTripConnection):
        dbapi_connection.begin_immediate(here=here)
        return True
    return False


class OneTripStatement:
    """A Core statement compiled once, run on a session's SQLite connection in one trip.

    For the hottest statements only (the embedded engine's defer), all short (they run on
    the loop's thread once the transaction holds the lock): it skips SQLAlchemy's
    per-execution work (cache key, execution context, result object: ~0.2 ms, more than
    SQLite's own work for a small INSERT). Values go through each column type's own
    bind processing, so the row is the one SQLAlchemy would have written.
    """

    def __init__(self, statement: Any, columns: list[str]) -> None:
        dialect = SQLiteDialect_pysqlite()
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        self.sql = str(compiled)
        if "POSTCOMPILE" in self.sql:
            raise ValueError("a statement for one trip cannot have late-rendered parameters")
        self._plan = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or ()
        ]

    async def rows(self, connection: AsyncConnection, params: dict[str, Any]) -> list[Any] | None:
        """Run on `connection` (in its transaction); the rows, or None when the connection
        is not this adapter's (the caller then executes the statement itself)."""
        raw = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        return await self.rows_on(raw, params)

    async def rows_on(self, raw: Any, params: dict[str, Any]) -> list[Any] | None:
        """`rows` on a driver connection (`uow.writer_connection`): no session, no
        SQLAlchemy connection in between; None when it is not this adapter's."""
        if not isinstance(raw, OneTripConnection):
            return None
        values = [
            params[name] if process is None else process(params[name])
            for name, process in self._plan
        ]
        async with raw._execute_mutex:  # no other use of the connection meanwhile
            result = await raw.trip(self.sql, values, False, short=True)
        rows: list[Any] = result[1]
        return rows

"""The embedded database's driver adapter (core/db/sqlite_driver.py): same results as
SQLAlchemy's aiosqlite adapter, fewer trips to aiosqlite's thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiosqlite
import pytest
from sqlalchemy import Column, CursorResult, Integer, MetaData, Table, Text, insert, text
from sqlalchemy.exc import IntegrityError, OperationalError

from cauce.core.db import Database, create_database, unit_of_work, writer_connection
from cauce.core.db.sqlite_driver import _HERE_MAX_ROWS, OneTripStatement
from tests.conftest import make_settings

_T = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("v", Text))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = create_database(make_settings(tmp_path))
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every function sent to an aiosqlite thread, by name."""
    sent: list[str] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return sent


def _writer_blocked(path: Path) -> bool:
    """Whether another connection is kept from writing right now."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return True
    else:
        other.execute("ROLLBACK")
        return False
    finally:
        other.close()


async def test_results_match_the_stock_adapter(db: Database) -> None:
    """Rows, RETURNING, executemany's rowcount and errors behave as with the stock adapter."""
    async with unit_of_work(db.sessionmaker) as session:
        new_id = (
            await session.execute(text("INSERT INTO t (v) VALUES ('a') RETURNING id"))
        ).scalar_one()
        result = await session.execute(
            text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}, {"v": "d"}]
        )
        assert cast(CursorResult[Any], result).rowcount == 3
        rows = (await session.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
    assert new_id == 1
    assert [tuple(r) for r in rows] == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('e')"))
        with pytest.raises(IntegrityError, match="UNIQUE"):
            await session.execute(text("INSERT INTO t (id, v) VALUES (1, 'dup')"))
        await session.rollback()
    async with db.sessionmaker() as session:
        # The failed unit of work was rolled back whole ('e' is gone).
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 4
        streamed = [r.v async for r in await session.stream(text("SELECT v FROM t ORDER BY id"))]
    assert streamed == ["a", "b", "c", "d"]


async def test_unit_of_work_takes_the_write_lock_with_its_first_statement(
    db: Database, tmp_path: Path
) -> None:
    """A read as a unit of work's first statement already holds the write lock (so a
    read-then-write cannot be overtaken); a plain session's read does not."""
    path = tmp_path / "cauce.db"
    async with unit_of_work(db.sessionmaker) as session:
        assert not _writer_blocked(path)  # nothing sent yet
        await session.execute(text("SELECT count(*) FROM t"))
        assert _writer_blocked(path)
    assert not _writer_blocked(path)
    async with db.sessionmaker() as session:
        await session.execute(text("SELECT count(*) FROM t"))
        assert not _writer_blocked(path)
    async with unit_of_work(db.sessionmaker) as session:
        rows = [r.v async for r in await session.stream(text("SELECT v FROM t"))]
        assert rows == []
        assert _writer_blocked(path)


async def test_a_short_write_transaction_takes_no_trip(
    db: Database, trips: list[str], tmp_path: Path
) -> None:
    """With the write lock free, a unit of work of short statements takes it, runs them
    and commits on the event loop's thread: no trip to aiosqlite's; what it wrote is
    committed, and a rollback undoes it. Any other unit of work takes the lock and
    commits there too, but sends its statements on the trip (one may be long). A read
    outside a unit of work takes one trip; the pool's rollback on check-in takes none."""
    path = tmp_path / "cauce.db"
    async with unit_of_work(db.sessionmaker, short=True) as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('a') RETURNING id"))
        assert _writer_blocked(path)
        await session.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}])
    assert not _writer_blocked(path)
    async with unit_of_work(db.sessionmaker, short=True) as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('undone')"))
        await session.rollback()
    assert trips == []
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(text("DELETE FROM t WHERE v = 'c'"))
        assert _writer_blocked(path)
    assert trips == ["_run"]
    async with db.sessionmaker() as session:
        values = (await session.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
    assert values == ["a", "b"]
    assert trips == ["_run", "_run"]


async def test_long_statements_of_a_write_transaction_still_take_the_trip(
    db: Database, trips: list[str]
) -> None:
    """In a unit of work of short statements, an executemany of many rows, or a
    statement with a long text parameter, still runs on aiosqlite's thread (the loop
    keeps serving meanwhile); the short ones around it do not."""
    many = [{"v": str(i)} for i in range(_HERE_MAX_ROWS + 1)]
    async with unit_of_work(db.sessionmaker, short=True) as session:
        await session.execute(text("INSERT INTO t (v) VALUES (:v)"), many[:_HERE_MAX_ROWS])
        assert trips == []
        await session.execute(text("INSERT INTO t (v) VALUES (:v)"), many)
        assert trips == ["_run"]
        await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "x" * 70_000})
        assert trips == ["_run", "_run"]
        await session.execute(text("INSERT INTO t (v) VALUES ('short')"))
    assert trips == ["_run", "_run"]
    async with db.sessionmaker() as session:
        count = (await session.execute(text("SELECT count(*) FROM t"))).scalar_one()
    assert count == 2 * _HERE_MAX_ROWS + 1 + 2


async def test_a_lock_held_by_another_process_is_waited_for_off_the_loop(
    db: Database, trips: list[str], tmp_path: Path
) -> None:
    """When another process holds the write lock, `BEGIN IMMEDIATE` is not retried on
    the loop's thread (SQLite's busy handler would stall every request): it goes to
    aiosqlite's thread with the statement and waits there, within the busy timeout,
    while the loop keeps running. The busy timeout is the configured one afterwards."""
    other = sqlite3.connect(tmp_path / "cauce.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.execute, "ROLLBACK")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        async with unit_of_work(db.sessionmaker, short=True) as session:
            await session.execute(text("INSERT INTO t (v) VALUES ('after the other')"))
            assert trips == ["_run"]
            busy = (await session.execute(text("PRAGMA busy_timeout"))).scalar_one()
    finally:
        ticker.cancel()
        other.close()
    assert ticks >= 10  # the loop ran while the statement waited for the lock
    assert busy == make_settings(tmp_path).db.busy_timeout_ms
    async with db.sessionmaker() as session:
        values = (await session.execute(text("SELECT v FROM t"))).scalars().all()
    assert values == ["after the other"]


async def test_one_trip_statement_runs_inline_once_the_write_lock_is_held(
    db: Database, trips: list[str]
) -> None:
    """A OneTripStatement runs without a trip once the transaction holds the write lock
    (here the lock was free, so it was taken without one too), and its row commits or
    rolls back with the rest of the transaction."""
    insert_v = OneTripStatement(insert(_T).returning(_T.c.id), ["v"])
    async with unit_of_work(db.sessionmaker) as session:
        first = await insert_v.rows(await session.connection(), {"v": "first"})
        second = await insert_v.rows(await session.connection(), {"v": "second"})
    assert trips == []
    assert first == [(1,)]
    assert second == [(2,)]
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(text("SELECT 1"))
        await insert_v.rows(await session.connection(), {"v": "rolled back"})
        await session.rollback()
    async with db.sessionmaker() as session:
        values = (await session.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
    assert values == ["first", "second"]


async def test_writer_connection_is_the_open_write_transactions_own(
    db: Database, trips: list[str]
) -> None:
    """`writer_connection` hands prebuilt statements the driver connection of a unit of
    work's transaction once it has begun, the one its session's statements use (their
    rows commit and roll back together), and nothing before it began, after it ended (the
    connection is back in the pool, maybe another transaction's), nor to a read-only
    session."""
    insert_v = OneTripStatement(insert(_T).returning(_T.c.id), ["v"])
    async with unit_of_work(db.sessionmaker) as session:
        assert writer_connection(session) is None
        await session.execute(text("INSERT INTO t (v) VALUES ('by the session')"))
        raw = writer_connection(session)
        assert raw is not None
        assert raw is (await session.connection()).sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        trips.clear()
        assert await insert_v.rows_on(raw, {"v": "by the driver"}) == [(2,)]
        assert trips == []  # the lock is held: it runs on the loop's thread
    assert writer_connection(session) is None
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(text("SELECT 1"))
        raw = writer_connection(session)
        assert raw is not None
        await insert_v.rows_on(raw, {"v": "rolled back"})
        await session.rollback()
        assert writer_connection(session) is None
    async with db.sessionmaker() as reader:
        await reader.execute(text("SELECT 1"))
        assert writer_connection(reader) is None
        values = (await reader.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
    assert values == ["by the session", "by the driver"]


async def test_writers_queue_in_process_and_each_sees_the_last_commit(db: Database) -> None:
    """Twenty concurrent read-then-write units of work: each takes its turn (no lost
    update, no "database is locked")."""
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(text("INSERT INTO t (id, v) VALUES (1, '0')"))

    async def bump() -> None:
        async with unit_of_work(db.sessionmaker) as session:
            value = int((await session.execute(text("SELECT v FROM t WHERE id = 1"))).scalar_one())
            await asyncio.sleep(0.005)  # other writers run meanwhile, and must wait
            await session.execute(text("UPDATE t SET v = :v WHERE id = 1"), {"v": str(value + 1)})

    await asyncio.gather(*(bump() for _ in range(20)))
    async with db.sessionmaker() as session:
        assert (await session.execute(text("SELECT v FROM t WHERE id = 1"))).scalar_one() == "20"


async def test_turn_is_passed_on_after_failure_and_cancellation(
    db: Database, trips: list[str]
) -> None:
    """A writer waits for its turn in the event loop, not in SQLite's busy handler (no
    trip to aiosqlite's thread until the lock is free); a writer that fails, or is
    cancelled while it holds the lock or waits for it, does not keep the next waiting."""

    async def fail() -> None:
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(text("INSERT INTO t (id, v) VALUES (1, 'a')"))
            await session.execute(text("INSERT INTO t (id, v) VALUES (1, 'again')"))

    with pytest.raises(IntegrityError):
        await fail()
    holding = asyncio.Event()

    async def hold() -> None:
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(text("INSERT INTO t (v) VALUES ('held')"))
            holding.set()
            await asyncio.sleep(60)

    async def wait() -> None:
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(text("INSERT INTO t (v) VALUES ('waited')"))

    async with db.sessionmaker() as one, db.sessionmaker() as two:  # two pooled connections
        await one.execute(text("SELECT 1"))
        await two.execute(text("SELECT 1"))
    holder = asyncio.create_task(hold())
    await holding.wait()
    trips.clear()
    waiter = asyncio.create_task(wait())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert trips == []
    waiter.cancel()
    holder.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    async with asyncio.timeout(2):
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(text("INSERT INTO t (v) VALUES ('next')"))
    async with db.sessionmaker() as session:
        values = (await session.execute(text("SELECT v FROM t"))).scalars().all()
    assert values == ["next"]


async def test_waiting_past_the_busy_timeout_fails_as_sqlite_would(tmp_path: Path) -> None:
    """A writer still waiting for its turn after the busy timeout gets "database is
    locked" (503 at the API), as it did from SQLite's busy handler."""
    database = create_database(make_settings(tmp_path, db={"busy_timeout_ms": 200}))
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        async with unit_of_work(database.sessionmaker) as session:
            await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
            with pytest.raises(OperationalError, match="database is locked"):
                async with unit_of_work(database.sessionmaker) as other:
                    await other.execute(text("INSERT INTO t (v) VALUES ('b')"))
    finally:
        await database.dispose()

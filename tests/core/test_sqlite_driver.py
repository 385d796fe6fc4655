"""The embedded database's driver adapter (core/db/sqlite_driver.py): same results as
SQLAlchemy's aiosqlite adapter, fewer trips to aiosqlite's thread."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiosqlite
import pytest
from sqlalchemy import CursorResult, text
from sqlalchemy.exc import IntegrityError

from cauce.core.db import Database, create_database, unit_of_work
from tests.conftest import make_settings


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


async def test_one_trip_per_statement(db: Database, trips: list[str]) -> None:
    """A unit of work with one INSERT ... RETURNING costs two trips (the statement with
    its BEGIN, and the commit); the pool's rollback on check-in costs none."""
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('a') RETURNING id"))
    assert trips == ["_run", "commit"]
    trips.clear()
    async with db.sessionmaker() as session:
        await session.execute(text("SELECT v FROM t"))
    assert trips == ["_run"]

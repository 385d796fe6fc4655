"""Pooled PostgreSQL connections are checked after an idle spell, not at every use
(core/db/idle_check.py), on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import psycopg
import psycopg_pool
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cauce.core.db import idle_check
from cauce.core.db.idle_check import IdleCheckedPool, check_when_idle
from tests.conftest import _libpq, _pg_exec, _require_pg

IDLE = 0.3


class StoppedClock:
    """The monotonic clock the idle check reads, moved by the test alone: "within the
    threshold" holds however long a busy machine takes between two checkouts (killing
    a backend first opens a connection of its own; a pool takes a connection back in a
    background task), and "past it" needs no sleep."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        """The stopped time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass for the idle check."""
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> StoppedClock:
    """Stop the idle check's clock for this test."""
    stopped = StoppedClock()
    monkeypatch.setattr(idle_check, "time", SimpleNamespace(monotonic=stopped.monotonic))
    return stopped


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.fixture
async def engine(clock: StoppedClock) -> Any:
    eng = create_async_engine(_require_pg(), pool_size=1, max_overflow=0)
    check_when_idle(eng, idle_seconds=IDLE)
    yield eng
    await eng.dispose()


async def test_sqlalchemy_replaces_a_dead_idle_connection(
    engine: AsyncEngine, clock: StoppedClock
) -> None:
    """A connection killed while it sat idle past the threshold is replaced at checkout:
    the caller never sees the dead one."""
    pid = await _backend_pid(engine)
    _pg_exec(_require_pg(), f"SELECT pg_terminate_backend({pid})")
    clock.advance(IDLE + 0.1)
    assert await _backend_pid(engine) != pid


async def test_sqlalchemy_does_not_ping_a_connection_just_returned(engine: AsyncEngine) -> None:
    """Within the threshold there is no ping (no round trip): a connection killed a
    moment ago fails its statement, and the pool then replaces it."""
    pid = await _backend_pid(engine)
    _pg_exec(_require_pg(), f"SELECT pg_terminate_backend({pid})")
    with pytest.raises(DBAPIError):
        await _backend_pid(engine)
    assert await _backend_pid(engine) != pid


async def test_psycopg_pool_checks_only_after_idle(
    monkeypatch: pytest.MonkeyPatch, clock: StoppedClock
) -> None:
    """procrastinate's pool (IdleCheckedPool): no check for busy connections, a check
    (which replaces a dead connection) after the idle threshold."""
    checks: list[int] = []
    original = psycopg_pool.AsyncConnectionPool.check_connection

    async def counting(conn: psycopg.AsyncConnection[Any]) -> None:
        checks.append(conn.info.backend_pid)
        await original(conn)

    monkeypatch.setattr(psycopg_pool.AsyncConnectionPool, "check_connection", counting)
    pool = IdleCheckedPool(
        _libpq(_require_pg()),
        min_size=1,
        max_size=1,
        open=False,
        idle_seconds=IDLE,
        check=psycopg_pool.AsyncConnectionPool.check_connection,  # as procrastinate asks
    )
    await pool.open(wait=True)
    try:
        for _ in range(20):
            async with pool.connection() as conn:
                pid = conn.info.backend_pid
                await conn.execute("SELECT 1")
        assert checks == []
        _pg_exec(_require_pg(), f"SELECT pg_terminate_backend({pid})")
        # The pool takes a connection back in a background task (it has a reset step),
        # which stamps it: the idle spell starts there.
        async with asyncio.timeout(30):
            while True:
                if pool.get_stats()["pool_available"] == 1:
                    break
                await asyncio.sleep(0.01)
        clock.advance(IDLE + 0.1)
        async with pool.connection() as conn:
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
            assert conn.info.backend_pid != pid
        assert checks == [pid]
    finally:
        await pool.close()

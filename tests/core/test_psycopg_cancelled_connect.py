"""A cancelled or timed-out psycopg connect closes its socket at once
(core/db/psycopg_connect.py).

psycopg 3.3 leaves the half-made connection open for as long as the connect's exception
lives (its traceback holds the connect generator, and so the `PGconn`): when a reference
cycle holds it, until the cyclic GC runs. During a PostgreSQL shutdown each such socket
is a postmaster child waiting up to `authentication_timeout` for a startup packet, and
the postmaster waits for it: a reconnecting `cauce worker` made `pg_ctl stop` fail
(found by a chaos test). The tests keep the exception alive on purpose, as such a cycle
does, and count this process's TCP sockets to the server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cauce.core.db.engine import create_database
from cauce.core.db.idle_check import IdleCheckedPool
from cauce.core.db.psycopg_connect import ClosingAsyncConnection
from tests.conftest import _libpq, _require_pg, make_settings

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/net/tcp"), reason="counts sockets with /proc/net/tcp (Linux)"
)


def _sockets_to(port: int) -> int:
    """This process's TCP sockets to `port` (any state but closed)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


def _pg() -> tuple[str, int]:
    url = _require_pg()
    port = make_url(url).port
    assert port is not None
    return _libpq(url), port


async def _cancel_mid_connect(connect: Callable[[], Awaitable[Any]], port: int) -> BaseException:
    """Start `connect`, cancel it as soon as its socket exists (the server has not
    answered yet: that takes a process fork), and return the CancelledError, which the
    caller keeps alive."""
    before = _sockets_to(port)
    task = asyncio.ensure_future(connect())
    for _ in range(10_000):
        await asyncio.sleep(0)
        if task.done() or _sockets_to(port) > before:
            break
    assert not task.done(), "the connect finished before it could be cancelled"
    assert _sockets_to(port) > before, "the connect opened no socket"
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    return caught.value


@pytest.mark.postgres
async def test_cancelled_connect_closes_its_socket() -> None:
    conninfo, port = _pg()
    before = _sockets_to(port)

    error = await _cancel_mid_connect(lambda: ClosingAsyncConnection.connect(conninfo), port)

    assert _sockets_to(port) == before
    assert isinstance(error, asyncio.CancelledError)


@pytest.mark.postgres
async def test_plain_psycopg_keeps_the_socket_while_the_error_lives() -> None:
    """The bug the class works around (and proof the count above can see a leak)."""
    conninfo, port = _pg()
    before = _sockets_to(port)

    error = await _cancel_mid_connect(lambda: psycopg.AsyncConnection.connect(conninfo), port)

    left = _sockets_to(port) - before
    if left == 0:
        pytest.skip("psycopg now closes a cancelled connect itself: psycopg_connect.py can go")
    assert left == 1
    # The error's traceback holds the frames that hold the connect generator and its
    # PGconn (and here `_cancel_mid_connect`'s, holding the cancelled task: a cycle the
    # cyclic GC does not even free). Clearing the frames closes the socket.
    traceback.clear_frames(error.__traceback__)
    assert _sockets_to(port) == before


@pytest.mark.postgres
async def test_a_completed_connect_is_an_ordinary_connection() -> None:
    conninfo, _port = _pg()
    conn = await ClosingAsyncConnection.connect(conninfo, autocommit=True)
    async with conn:
        assert isinstance(conn, ClosingAsyncConnection)
        assert conn.autocommit
        cur = await conn.execute("SELECT 1")
        assert await cur.fetchone() == (1,)


@pytest.mark.postgres
async def test_the_worker_pool_and_procrastinate_listener_use_it() -> None:
    """procrastinate's listener connects with `pool.connection_class`: a listener
    cancelled while connecting (a worker stopping or restarting) leaves no socket."""
    conninfo, port = _pg()
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo, min_size=1, max_size=1, pool_factory=IdleCheckedPool
    )
    await connector.open_async()
    try:
        assert connector.pool.connection_class is ClosingAsyncConnection
        before = _sockets_to(port)  # the pool's connection

        async def on_notification(**_: Any) -> None:
            pass

        error = await _cancel_mid_connect(
            lambda: connector.listen_notify(on_notification, ["cauce_test_channel"]), port
        )

        assert _sockets_to(port) == before
        assert isinstance(error, asyncio.CancelledError)
    finally:
        await connector.close_async()


def test_an_explicit_connection_class_is_kept() -> None:
    pool = IdleCheckedPool("", connection_class=psycopg.AsyncConnection, open=False)
    assert pool.connection_class is psycopg.AsyncConnection


async def test_timed_out_connect_closes_its_socket() -> None:
    """`connect_timeout` (2 s at least): the timed-out attempt's socket goes too. A
    listening socket that never answers stands for an unresponsive server."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        conninfo = f"host=127.0.0.1 port={port} user=x dbname=x sslmode=disable connect_timeout=1"

        with pytest.raises(psycopg.errors.ConnectionTimeout) as caught:
            await ClosingAsyncConnection.connect(conninfo)

        assert _sockets_to(port) == 0
        assert caught.value is not None


@pytest.mark.postgres
async def test_the_application_engine_closes_a_cancelled_connect(tmp_path: Path) -> None:
    """The application's own pool (`create_database`, SQLAlchemy's psycopg dialect)
    connects through ClosingAsyncConnection too: request handlers and job handlers
    reconnecting while PostgreSQL shuts down hold no socket."""
    url = _require_pg()
    port = make_url(url).port
    assert port is not None
    database = create_database(make_settings(tmp_path, database_url=url))
    try:
        before = _sockets_to(port)

        async def connect() -> None:
            async with database.engine.connect():
                await asyncio.sleep(30)  # never reached: cancelled mid-connect

        error = await _cancel_mid_connect(connect, port)

        assert _sockets_to(port) == before
        assert isinstance(error, asyncio.CancelledError)
        async with database.engine.connect() as conn:  # and it still connects
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await database.engine.dispose()

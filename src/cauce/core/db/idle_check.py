"""Check a pooled PostgreSQL connection before use only when it sat idle for a while.

Both pools Cauce uses on PostgreSQL check each connection they hand out by default:
SQLAlchemy's `pool_pre_ping` and procrastinate's psycopg pool (`check_connection`). That
is one round trip more per transaction, a quarter of a no-op job's worker CPU and most
of a small request's. A connection that was in use a moment ago is alive; the one that
fails is the one that sat idle (PostgreSQL restarted, a proxy or firewall dropped it).
So both pools here check a connection only when it was idle `IDLE_CHECK_SECONDS` or
more, and a new one never.

A connection that breaks while in use still fails its statement: the request answers
503 (`database_unavailable`), a job attempt is released and runs again, and the pool
throws the broken connection away.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import psycopg
import psycopg_pool
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine

from cauce.core.db.psycopg_connect import ClosingAsyncConnection

IDLE_CHECK_SECONDS = 10.0
_SINCE = "cauce.idle_since"


def check_when_idle(engine: AsyncEngine, idle_seconds: float = IDLE_CHECK_SECONDS) -> None:
    """SQLAlchemy: ping a connection at checkout when it sat in the pool `idle_seconds`
    or more (instead of `pool_pre_ping`'s ping at every checkout)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info[_SINCE] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_SINCE)
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool throws this connection away and checks out another.
            raise exc.DisconnectionError(str(error)) from error


class IdleCheckedPool(psycopg_pool.AsyncConnectionPool):
    """psycopg's pool, checking a connection it hands out only after an idle spell.

    A drop-in `pool_factory` for procrastinate's `PsycopgConnector` (which asks for
    `check_connection` on every checkout): any `check` passed in is replaced. Its
    connections, and procrastinate's listener (`pool.connection_class.connect`), are made
    with `ClosingAsyncConnection` unless a `connection_class` is passed: a cancelled
    connect closes its socket at once (psycopg_connect.py)."""

    def __init__(self, *args: Any, idle_seconds: float = IDLE_CHECK_SECONDS, **kwargs: Any):
        self._idle_seconds = idle_seconds
        self._returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._then_reset = kwargs.pop("reset", None)
        kwargs["check"] = self._check_if_idle
        kwargs["reset"] = self._stamp
        kwargs.setdefault("connection_class", ClosingAsyncConnection)
        super().__init__(*args, **kwargs)

    async def _check_if_idle(self, conn: psycopg.AsyncConnection[Any]) -> None:
        since = self._returned.get(conn)
        if since is not None and time.monotonic() - since >= self._idle_seconds:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    async def _stamp(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's `reset` callback: runs as each connection comes back."""
        self._returned[conn] = time.monotonic()
        if self._then_reset is not None:
            await self._then_reset(conn)

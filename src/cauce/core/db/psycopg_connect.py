"""psycopg connections whose cancelled or failed connect closes its socket at once.

`psycopg.AsyncConnection.connect` drives libpq's non-blocking connect with a generator
(`_connect_gen`, holding the half-made `PGconn`) and waits on its socket
(`waiting.wait_conn_async`). When the connect is cancelled (a task cancelled, a
`wait_for` timing out) or an attempt times out (`connect_timeout`), psycopg 3.3 leaves
that generator suspended: the `PGconn`, and its socket to the server, live on in the
frames of the exception's traceback (psycopg re-raises from `connect`, whose frame holds
the generator) until the exception is freed, which for an exception caught in a
reference cycle is whenever the cyclic garbage collector runs.

PostgreSQL answers a connection made during its shutdown with a child process that waits
for the client's startup packet, up to `authentication_timeout` (60 s by default), and
the postmaster waits for that child: a worker reconnecting while an operator stops the
server made `pg_ctl stop` (even `-m immediate`) give up after its 30 s.

`ClosingAsyncConnection.connect` closes every connect generator it started once the
connect is over, successful or not: a suspended generator finishes, releasing its
`PGconn`, which closes the socket (a finished one is left as it is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from contextvars import ContextVar
from typing import Any, Self

import psycopg
from psycopg.abc import PQGenConn
from psycopg.rows import Row

# The connect generators started by the `ClosingAsyncConnection.connect` running in this
# context (a task runs one connect at a time; each task has its own context).
_STARTED: ContextVar[list[Generator[Any, Any, Any]] | None] = ContextVar(
    "cauce_psycopg_connect_started", default=None
)


class ClosingAsyncConnection(psycopg.AsyncConnection[Row]):
    """A psycopg `AsyncConnection` whose connect leaves no half-made connection open.

    Use it as `psycopg_pool.AsyncConnectionPool(connection_class=...)`: the pool's
    connections and procrastinate's listener (`pool.connection_class.connect`) are made
    with it."""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        started: list[Generator[Any, Any, Any]] = []
        token = _STARTED.set(started)
        try:
            return await super().connect(conninfo, **kwargs)
        finally:
            _STARTED.reset(token)
            for gen in started:
                # A suspended attempt's PGconn goes, and its socket with it; the connect's
                # own outcome stands whatever a close raises.
                with contextlib.suppress(Exception):
                    gen.close()

    @classmethod
    def _connect_gen(cls, conninfo: str = "", **kwargs: Any) -> PQGenConn[Self]:
        # psycopg's private hook: 3.2 passes `timeout=` too, 3.3 only the conninfo.
        gen = super()._connect_gen(conninfo, **kwargs)
        started = _STARTED.get()
        if started is not None:
            started.append(gen)
        return gen

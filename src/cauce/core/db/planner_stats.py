"""Which planner statistics a SQLite connection has: pooled connections load them once,
when they open (`analyze.py` says why this matters).

SQLite reads `sqlite_stat1` when a connection loads the schema, and again only if that
connection itself runs `ANALYZE` (or `ANALYZE sqlite_schema`, which needs the write
lock). So after `core.db_analyze`, the pool's open connections would keep planning with
the statistics they opened with. Instead, each connection remembers the generation of
statistics it opened at, `changed` starts a new one after an `ANALYZE` commits, and a
connection checked out with an older generation is replaced by a new one (the pool's
disconnect handling: `DisconnectionError` at checkout), which opens with the new
statistics without taking the write lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

_KEY = "cauce.planner_stats"
_generations: dict[str, int] = {}  # by database file


def changed(database: str) -> None:
    """New statistics were committed in `database` (a file path): connections opened
    before are replaced at their next checkout."""
    _generations[database] = _generations.get(database, 0) + 1


def refresh_on_change(engine: AsyncEngine, database: str) -> None:
    """Replace this engine's pooled connections that opened before `changed(database)`."""

    def opened(_dbapi_connection: Any, record: Any) -> None:
        record.info[_KEY] = _generations.get(database, 0)

    def checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get(_KEY, 0) != _generations.get(database, 0):
            raise DisconnectionError("planner statistics changed: reopening")

    event.listen(engine.sync_engine, "connect", opened)
    event.listen(engine.sync_engine, "checkout", checkout)

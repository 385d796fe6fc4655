"""Engine construction for the embedded (SQLite) and scale-out (PostgreSQL) databases."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from cauce.core.config import Settings
from cauce.core.db.checkpoint import WRITER_CHECKPOINT_PAGES, WalCheckpointer
from cauce.core.db.idle_check import check_when_idle
from cauce.core.db.sqlite_driver import one_trip_dbapi


@dataclass(frozen=True, slots=True)
class Database:
    """An engine and the session factory bound to it."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    async def ping(self) -> None:
        """Run a trivial query; raises if the database cannot answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    def checkpointer(self) -> WalCheckpointer | None:
        """A checkpointer for this database's WAL, not started; None unless the database
        is a SQLite file."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return WalCheckpointer(Path(url.database))


def json_text(value: Any) -> str:
    """JSON columns' text: orjson's (several times faster than `json.dumps`, which
    SQLAlchemy uses by default), or the standard library's for what orjson refuses (an
    integer past 64 bits), so nothing that stored before fails now. Read back with
    `json.loads`, which keeps such integers exact."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # WAL lets readers run beside the single writer; NORMAL is durable across process
        # crashes in WAL mode (REFERENCE.md: 24 k rows/s vs 7 k with FULL).
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # Deleted content is overwritten, not left in free pages: an erased lead's personal
        # data must not stay readable in the file (many builds default to it; not all).
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Checkpoints are a thread's work (checkpoint.py); a writer's only a backstop.
        cur.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
        cur.close()

    return on_connect


def create_database(settings: Settings, *, url: str | None = None) -> Database:
    """Build the engine for `settings` (or an explicit `url`) with the right options."""
    url = url or settings.effective_database_url
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "echo": settings.db.echo,
        "pool_pre_ping": False,
        "json_serializer": json_text,
    }
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {
            "timeout": settings.db.busy_timeout_ms / 1000,
            # sqlite_driver.OneTripStatement may run a statement on the event loop's thread.
            "check_same_thread": False,
        }
        # The stock dialect with fewer trips to aiosqlite's thread (sqlite_driver.py).
        engine = create_async_engine(url, module=one_trip_dbapi(), **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(settings.db.busy_timeout_ms))
    else:
        kwargs.update(
            pool_size=settings.db.pool_size,
            max_overflow=settings.db.max_overflow,
            pool_timeout=settings.db.pool_timeout_seconds,
        )
        engine = create_async_engine(url, **kwargs)
        # Instead of pool_pre_ping's round trip per checkout (idle_check.py).
        check_when_idle(engine)
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False))

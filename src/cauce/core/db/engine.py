"""Engine construction for the embedded (SQLite) and scale-out (PostgreSQL) databases."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
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
from cauce.core.db.planner_stats import refresh_on_change
from cauce.core.db.psycopg_connect import ClosingAsyncConnection
from cauce.core.db.sqlite_driver import one_trip_dbapi
from cauce.core.db.text_fold import register_sqlite


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


def private_dir(path: Path) -> Path:
    """`path`, created if missing as a directory only its owner may enter (0700), as is
    every missing directory above it: Cauce's files hold personal data (the database,
    uploaded CSVs, models trained on leads), and other local users have no business
    listing or reading them. A directory that exists keeps its mode: the operator made
    it (systemd's `StateDirectory=`, a mounted volume) and chose who may read it."""
    for parent in reversed(path.parents):
        if not parent.is_dir():
            # One at a time: `mkdir(parents=True)` would give the parents the umask's mode.
            # One made meanwhile (by another process) is as good.
            with contextlib.suppress(FileExistsError):
                parent.mkdir(mode=0o700)
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def create_private(path: Path) -> int:
    """A new file at `path` only its owner may read or write (0600, whatever the umask
    allows beyond that), opened for writing; its file descriptor. `FileExistsError` if
    `path` exists: nothing is ever written into a file someone else made first."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o600)


def _sqlite_file(database: str) -> None:
    """Create the database file, empty and 0600, before SQLite first opens it: SQLite
    would create it with the umask's mode (0644 under the usual 022), and it gives its
    `-wal` and `-shm` files the database file's mode. An empty file is an empty database
    to SQLite. An existing file is left as it is."""
    path = Path(database)
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(create_private(path))


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
        # Case and accents aside beyond ASCII, as on PostgreSQL (text_fold.py).
        register_sqlite(dbapi_conn)

    return on_connect


def _sqlite_uri(query: Mapping[str, Any], database: str) -> bool:
    """Whether the URL names its database as a SQLite URI (`file:...`, `?uri=true`),
    whose path and options (`mode=memory`, `mode=ro`) SQLite reads itself."""
    return database.startswith("file:") or str(query.get("uri", "")).lower() in ("true", "1")


def create_database(settings: Settings, *, url: str | None = None) -> Database:
    """Build the engine for `settings` (or an explicit `url`) with the right options."""
    url = url or settings.effective_database_url
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "echo": settings.db.echo,
        # A failed statement's error (logged, or rendered into a traceback) would carry
        # its bound values: emails, phones, names. Shown only while statements are echoed
        # on purpose (`db.echo`, a debugging switch), which logs them anyway.
        "hide_parameters": not settings.db.echo,
        "pool_pre_ping": False,
        "json_serializer": json_text,
    }
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        # A plain path (a new connection to ":memory:" or a URI's memory database would
        # be another, empty database).
        a_file = (
            database is not None
            and database not in ("", ":memory:")
            and not _sqlite_uri(parsed.query, database)
        )
        if database and a_file:
            _sqlite_file(database)
        kwargs["connect_args"] = {
            "timeout": settings.db.busy_timeout_ms / 1000,
            # sqlite_driver.OneTripStatement may run a statement on the event loop's thread.
            "check_same_thread": False,
        }
        # The stock dialect with fewer trips to aiosqlite's thread (sqlite_driver.py).
        engine = create_async_engine(url, module=one_trip_dbapi(), **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(settings.db.busy_timeout_ms))
        if database and a_file:
            refresh_on_change(engine, database)
    else:
        kwargs.update(
            pool_size=settings.db.pool_size,
            max_overflow=settings.db.max_overflow,
            pool_timeout=settings.db.pool_timeout_seconds,
        )
        if parsed.get_driver_name() == "psycopg":
            # A cancelled connect (a request cut, a deadline) closes its socket at once:
            # PostgreSQL's shutdown waits for a half-made one (psycopg_connect.py).
            kwargs["connect_args"] = {"async_creator_fn": ClosingAsyncConnection.connect}
        engine = create_async_engine(url, **kwargs)
        # Instead of pool_pre_ping's round trip per checkout (idle_check.py).
        check_when_idle(engine)
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False))

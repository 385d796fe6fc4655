"""The database layer on both engines: pragmas, migrations, the unit of work, timestamps."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select, text

from cauce.core.config import Settings
from cauce.core.db import create_database, unit_of_work
from cauce.core.db.engine import _sqlite_pragmas
from cauce.core.db.migrate import (
    MIGRATION_LOCK,
    alembic_config,
    current_revisions,
    pending_migrations,
    prepare_schema,
    upgrade,
)
from cauce.core.errors import ConfigError
from cauce.core.security.models import ApiKey
from cauce.migrations.tables import metadata
from tests.conftest import make_settings

# Migration 0026's index, which no model declares (a GIN index of an extension's operator
# class, made only where the extension can be created).
SEARCH_TRIGRAM_INDEX = "ix_leads_search_text_trgm"
HEADS = set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    """The embedded database runs in WAL mode with foreign keys and a busy timeout."""
    settings = make_settings(tmp_path, db={"busy_timeout_ms": 1234})
    db = create_database(settings)
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 1234
            assert (await conn.execute(text("PRAGMA secure_delete"))).scalar() == 1
        assert (tmp_path / "cauce.db").exists()
    finally:
        await db.dispose()


def test_sqlite_overwrites_deleted_content_whatever_the_build(tmp_path: Path) -> None:
    """Erased personal data is overwritten in the file, also with an SQLite built without
    SECURE_DELETE by default (Debian's has it on; the connection setup must not rely on it)."""
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        conn.execute("PRAGMA secure_delete=OFF")  # a build whose default is off
        _sqlite_pragmas(1000)(conn, None)
        assert conn.execute("PRAGMA secure_delete").fetchone() == (1,)
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES ('ana.garcia@example.es')")
        conn.commit()
        conn.execute("DELETE FROM t")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    assert b"ana.garcia" not in (tmp_path / "x.db").read_bytes()


async def test_migrations_apply_on_empty_database(empty_database_url: str, tmp_path: Path) -> None:
    """`upgrade` takes an empty database to head, and then nothing is pending."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    try:
        assert await pending_migrations(db)
        assert await current_revisions(db) == set()
        await upgrade(db)
        assert not await pending_migrations(db)
        # One head (two migrations with the same parent would fork the chain), reached.
        assert len(HEADS) == 1
        assert await current_revisions(db) == HEADS
        await upgrade(db)  # idempotent
    finally:
        await db.dispose()


async def test_an_upgrade_waits_for_another_in_progress_on_postgresql(
    empty_database_url: str, backend: str, tmp_path: Path
) -> None:
    """`cauce db upgrade` on PostgreSQL first takes the migration lock: while another
    upgrade holds it (a deploy step run on two machines at once) it waits, then finds the
    revisions committed and applies what is left, instead of creating the same tables
    at the same time as the other."""
    if backend != "postgresql":
        pytest.skip("SQLite takes one writer at a time already")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env.update(CAUCE_DATA_DIR=str(tmp_path), CAUCE_DATABASE_URL=empty_database_url)
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    # The migration lock, waited for in this database (a bigint key: high and low halves).
    waiting = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = :high AND objid = :low AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).bindparams(high=MIGRATION_LOCK >> 32, low=MIGRATION_LOCK & 0xFFFFFFFF)
    try:
        async with db.engine.connect() as holder, db.engine.connect() as watcher:
            async with holder.begin():  # another upgrade, in progress
                await holder.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
                upgrader = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "cauce", "db", "upgrade", env=env, stderr=PIPE
                )
                async with asyncio.timeout(60):
                    while not await watcher.scalar(waiting):
                        assert upgrader.returncode is None, "it did not wait for the lock"
                        await asyncio.sleep(0.05)
                await watcher.rollback()
                assert await current_revisions(db) == set()  # nothing done meanwhile
            async with asyncio.timeout(120):
                _, errors = await upgrader.communicate()
        assert upgrader.returncode == 0, errors
        assert await current_revisions(db) == HEADS
    finally:
        await db.dispose()


def _schema_diff(connection: Connection) -> list[Any]:
    # On PostgreSQL procrastinate's tables replace the embedded engine's `cauce_jobs`.
    on_pg = connection.dialect.name == "postgresql"

    def include(obj: Any, name: str | None, type_: str, reflected: bool, _: Any) -> bool:
        if type_ == "index" and name == SEARCH_TRIGRAM_INDEX:
            return False  # PostgreSQL's, when pg_trgm can be had: migration 0026 only
        table = obj if type_ == "table" else getattr(obj, "table", None)
        table_name = getattr(table, "name", "") or ""
        if on_pg and table_name == "cauce_jobs":
            return False
        return not (reflected and table_name.startswith("procrastinate"))

    ctx = MigrationContext.configure(
        connection, opts={"include_object": include, "compare_type": False}
    )
    return list(compare_metadata(ctx, metadata))


async def test_search_text_is_filled_for_stored_leads(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Migration 0009 folds the searched fields of the leads stored before it (erased
    leads stay empty)."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    try:
        await upgrade(db, "0008")
        insert = text(
            "INSERT INTO leads (uid, first_name, last_name, company, email, erased_at, status,"
            " source, score, score_model, version, sync_status, synced_version, sync_attempts,"
            " email_disposable, email_free, utm, custom_fields, score_reasons, match_keys,"
            " created_at, updated_at) VALUES (:uid, :first, :last, :company, :email, :erased,"
            " 'new', 'api', 0, 'points', 1, 'pending', 0, 0, false, false, '{}', '{}', '[]',"
            " '[]', :now, :now)"
        )
        now = datetime.now(UTC)
        async with db.engine.begin() as conn:
            for uid, first, erased in (("a", "María José", None), ("b", "Íñigo", now)):
                await conn.execute(
                    insert,
                    {
                        "uid": uid,
                        "first": first,
                        "last": "García-Núñez",
                        "company": "Bodegas Ébano, S.L.",
                        "email": f"{uid}@Bodegas.es",
                        "erased": erased,
                        "now": now,
                    },
                )
        await upgrade(db, "0009")  # (0011 adds the joined words: test_search_punctuation)
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT uid, search_text FROM leads"))).all()
        assert sorted(tuple(row) for row in rows) == [
            ("a", "maria jose garcia nunez bodegas ebano s l a bodegas es"),
            ("b", ""),
        ]
    finally:
        await db.dispose()


async def test_migrations_match_the_models(empty_database_url: str, tmp_path: Path) -> None:
    """After `upgrade`, the tables the models declare are exactly the migrated ones."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    try:
        await upgrade(db)
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(_schema_diff)
        assert diff == []
    finally:
        await db.dispose()


async def test_unit_of_work_commits_or_rolls_back(settings: Settings) -> None:
    """Rows written in a block that raises are gone; a block that succeeds is committed."""
    db = create_database(settings)
    try:

        async def write_then_fail() -> None:
            async with unit_of_work(db.sessionmaker) as session:
                session.add(ApiKey(key_id="a" * 12, name="x", key_hash="h" * 64, scopes=[]))
                await session.flush()
                raise RuntimeError("fail after the write")

        with pytest.raises(RuntimeError):
            await write_then_fail()
        async with unit_of_work(db.sessionmaker) as session:
            session.add(ApiKey(key_id="b" * 12, name="y", key_hash="h" * 64, scopes=[]))
        async with db.sessionmaker() as session:
            names = (await session.scalars(select(ApiKey.name))).all()
        assert names == ["y"]
    finally:
        await db.dispose()


async def test_json_columns_round_trip_exactly(settings: Settings) -> None:
    """JSON columns store what they are given and give it back the same: accents,
    nesting, and an integer past 64 bits (which orjson, the fast path, refuses)."""
    db = create_database(settings)
    value: list[Any] = ["leads:write", {"ñandú": [1.5, None, True]}, 2**70, "€"]
    try:
        async with unit_of_work(db.sessionmaker) as session:
            session.add(ApiKey(key_id="j" * 12, name="j", key_hash="h" * 64, scopes=value))
        async with db.sessionmaker() as session:
            stored = await session.scalar(select(ApiKey.scopes))
        assert stored == value
        assert isinstance(stored[2], int)
    finally:
        await db.dispose()


async def test_timestamps_round_trip_as_aware_utc(settings: Settings) -> None:
    """A timestamp in any zone comes back as the same instant, in UTC."""
    db = create_database(settings)
    madrid = timezone(timedelta(hours=1))
    moment = datetime(2026, 3, 29, 1, 30, 15, 123000, tzinfo=madrid)
    try:
        async with unit_of_work(db.sessionmaker) as session:
            session.add(
                ApiKey(key_id="c" * 12, name="t", key_hash="h" * 64, scopes=[], created_at=moment)
            )
        async with db.sessionmaker() as session:
            stored = await session.scalar(select(ApiKey.created_at))
        assert stored is not None
        assert stored.tzinfo is not None
        assert stored == moment
        assert stored.utcoffset() == UTC.utcoffset(None)
    finally:
        await db.dispose()


async def test_naive_timestamp_refused(settings: Settings) -> None:
    """A naive datetime is a bug; it is refused rather than stored ambiguously."""
    db = create_database(settings)
    try:
        with pytest.raises(Exception, match="naive datetime"):
            async with unit_of_work(db.sessionmaker) as session:
                session.add(
                    ApiKey(
                        key_id="d" * 12,
                        name="t",
                        key_hash="h" * 64,
                        scopes=[],
                        created_at=datetime(2026, 1, 1),
                    )
                )
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(ApiKey)) == 0
    finally:
        await db.dispose()


async def test_serve_policy_for_pending_migrations(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    """SQLite applies pending migrations at start-up; PostgreSQL refuses unless told to."""
    settings = make_settings(tmp_path, database_url=empty_database_url)
    db = create_database(settings)
    try:
        if backend == "sqlite":
            await prepare_schema(db, settings)
            assert not await pending_migrations(db)
        else:
            with pytest.raises(ConfigError, match="cauce db upgrade"):
                await prepare_schema(db, settings)
            assert await pending_migrations(db)
            told = make_settings(
                tmp_path, database_url=empty_database_url, db={"auto_migrate": True}
            )
            await prepare_schema(db, told)
            assert not await pending_migrations(db)
    finally:
        await db.dispose()


async def test_sqlite_refusal_when_auto_migrate_off(tmp_path: Path) -> None:
    """Auto-migration can be switched off on SQLite too."""
    settings = make_settings(tmp_path, db={"auto_migrate": False})
    db = create_database(settings)
    try:
        with pytest.raises(ConfigError, match="pending migrations"):
            await prepare_schema(db, settings)
    finally:
        await db.dispose()

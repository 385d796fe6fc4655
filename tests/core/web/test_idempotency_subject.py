"""Stored answers that show a record name it (`subject`), and its erasure deletes them;
migration 0014 adds the column without touching the keys already stored."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Connection, inspect, select, text

from cauce.core.db import create_database, unit_of_work
from cauce.core.db.migrate import alembic_config, upgrade
from cauce.core.web.idempotency import IdempotencyRecord, IdempotencyStore, forget_subject
from tests.conftest import make_settings


async def test_forget_subject_deletes_the_answers_about_it_under_every_api_key(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Answers about the subject go whichever API key stored them; answers about another
    record, and answers about none, stay."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    store = IdempotencyStore()
    try:
        await upgrade(db)
        async with unit_of_work(db.sessionmaker) as session:
            for scope, key, subject in (
                ("1", "a", "lead-1"),
                ("2", "b", "lead-1"),
                ("1", "c", "lead-2"),
                ("1", "d", None),
            ):
                await store.remember(session, scope, key, "f" * 64, 200, {"k": key}, subject)
        async with unit_of_work(db.sessionmaker) as session:
            assert await forget_subject(session, "lead-1") == 2
            assert await forget_subject(session, "lead-9") == 0
        async with unit_of_work(db.sessionmaker) as session:
            left = (await session.scalars(select(IdempotencyRecord.key))).all()
            assert sorted(left) == ["c", "d"]
            assert await store.lookup(session, "1", "a", "f" * 64) is None
            replay = await store.lookup(session, "1", "c", "f" * 64)
            assert replay is not None
            assert replay.body == {"k": "c"}
    finally:
        await db.dispose()


def _has_subject(connection: Connection) -> bool:
    columns = inspect(connection).get_columns("idempotency_keys")
    return "subject" in {column["name"] for column in columns}


def _downgrade_to_0013(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0013")


async def test_migration_0014_adds_the_subject_and_its_downgrade_keeps_the_keys(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Keys stored before 0014 have no subject; the downgrade drops the column only."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    try:
        await upgrade(db, "0013")
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, body, "
                    "created_at) VALUES ('1', 'k', 'f', 200, :body, CURRENT_TIMESTAMP)"
                ),
                {"body": b"{}"},
            )
        await upgrade(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_has_subject)
            stored = await conn.execute(text("SELECT key, subject FROM idempotency_keys"))
            assert stored.all() == [("k", None)]
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0013)
        async with db.engine.connect() as conn:
            assert not await conn.run_sync(_has_subject)
            assert await conn.scalar(text("SELECT count(*) FROM idempotency_keys")) == 1
    finally:
        await db.dispose()

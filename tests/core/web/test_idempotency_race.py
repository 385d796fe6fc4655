"""One `Idempotency-Key`, one application: a request whose key another request stored
after this one looked it up (on PostgreSQL the second waits for the first's intake locks,
then finds its answer) is refused with 409 and rolled back, never stored over it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from cauce.core.db import create_database, unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.web.idempotency import IdempotencyKeyInUse, IdempotencyRecord, IdempotencyStore
from tests.conftest import SettingsFactory

PRINT = "f" * 64


def _expired(key: str) -> IdempotencyRecord:
    """An answer stored under `key` a day and an hour ago: past the 24 h it is kept."""
    return IdempotencyRecord(
        scope="k",
        key=key,
        fingerprint=PRINT,
        status_code=201,
        body=b"{}",
        created_at=utcnow() - timedelta(hours=25),
    )


async def test_a_key_stored_meanwhile_is_not_overwritten(settings_factory: SettingsFactory) -> None:
    """The second request looked the key up before the first stored it: storing its own
    answer is refused (it then rolls back), and the first answer stays."""
    db = create_database(settings_factory())
    store = IdempotencyStore()
    try:
        async with db.sessionmaker() as session:
            assert await store.lookup(session, "k", "retry-1", PRINT) is None  # the second
        async with unit_of_work(db.sessionmaker) as session:  # the first commits
            await store.remember(session, "k", "retry-1", PRINT, 201, {"outcome": "created"})
        with pytest.raises(IdempotencyKeyInUse):
            async with unit_of_work(db.sessionmaker) as session:  # the second, later on
                await store.remember(session, "k", "retry-1", PRINT, 200, {"outcome": "merged"})
        async with db.sessionmaker() as session:
            stored = await store.lookup(session, "k", "retry-1", PRINT)
        assert stored is not None
        assert (stored.status_code, stored.body) == (201, {"outcome": "created"})
    finally:
        await db.dispose()


async def test_an_expired_key_is_taken_over(settings_factory: SettingsFactory) -> None:
    """A key older than the TTL is a new key: its old answer gives way to the new one."""
    db = create_database(settings_factory())
    store = IdempotencyStore(ttl=timedelta(hours=24))
    try:
        async with unit_of_work(db.sessionmaker) as session:
            session.add(_expired("old"))
        async with unit_of_work(db.sessionmaker) as session:
            assert await store.lookup(session, "k", "old", PRINT) is None
            await store.remember(session, "k", "old", PRINT, 200, {"outcome": "merged"})
        async with db.sessionmaker() as session:
            row = await session.scalar(select(IdempotencyRecord))
        assert row is not None
        assert row.status_code == 200
    finally:
        await db.dispose()


async def test_two_requests_taking_over_one_expired_key_meet_at_the_insert(
    settings_factory: SettingsFactory,
) -> None:
    """Both looked the expired key up; the first stores its answer and commits; the
    second gets 409 (it once failed deleting the expired row the first had deleted)."""
    db = create_database(settings_factory())
    store = IdempotencyStore(ttl=timedelta(hours=24))
    try:
        if db.engine.dialect.name == "sqlite":
            pytest.skip("SQLite runs one writing transaction at a time: nothing interleaves")
        async with unit_of_work(db.sessionmaker) as session:
            session.add(_expired("old"))
        async with db.sessionmaker() as first, db.sessionmaker() as second:
            assert await store.lookup(first, "k", "old", PRINT) is None
            assert await store.lookup(second, "k", "old", PRINT) is None
            await store.remember(first, "k", "old", PRINT, 201, {"n": 1})
            await first.commit()
            with pytest.raises(IdempotencyKeyInUse):
                await store.remember(second, "k", "old", PRINT, 201, {"n": 2})
            await second.rollback()
        async with db.sessionmaker() as session:
            stored = await store.lookup(session, "k", "old", PRINT)
        assert stored is not None
        assert stored.body == {"n": 1}
    finally:
        await db.dispose()

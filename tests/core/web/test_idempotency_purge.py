"""Idempotency keys are kept 24 h, then deleted with their answers by a periodic job."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.app import create_app
from cauce.core.config import load_settings
from cauce.core.db import create_database, unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.web.idempotency import PURGE_TASK, IdempotencyRecord, IdempotencyStore
from tests.conftest import SettingsFactory, make_settings
from tests.core.web.conftest import resources_of


def _record(key: str, age: timedelta) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope="key-1",
        key=key,
        fingerprint="f" * 64,
        status_code=201,
        body=b'{"email": "ana@example.es"}',
        created_at=utcnow() - age,
    )


async def _keys(sessionmaker: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessionmaker() as session:
        return set((await session.scalars(select(IdempotencyRecord.key))).all())


async def test_purge_deletes_the_expired_keys_only(settings_factory: SettingsFactory) -> None:
    """Keys older than the TTL go, with the answers (personal data) they hold; younger
    ones stay and still replay."""
    db = create_database(settings_factory())
    try:
        async with unit_of_work(db.sessionmaker) as session:
            session.add_all(
                [
                    _record("old", timedelta(hours=25)),
                    _record("older", timedelta(days=9)),
                    _record("young", timedelta(hours=23)),
                ]
            )
        async with unit_of_work(db.sessionmaker) as session:
            assert await IdempotencyStore().purge(session) == 2
        assert await _keys(db.sessionmaker) == {"young"}
        async with db.sessionmaker() as session:
            replay = await IdempotencyStore().lookup(session, "key-1", "young", "f" * 64)
        assert replay is not None
        assert replay.body == {"email": "ana@example.es"}
    finally:
        await db.dispose()


async def test_the_schedule_runs_the_purge_in_the_embedded_worker(
    backend: str, settings_factory: SettingsFactory
) -> None:
    """`cauce serve` on SQLite registers the purge job and its schedule, and its worker
    runs it: the expired key is gone without anyone asking."""
    if backend != "sqlite":
        pytest.skip("on PostgreSQL jobs run in `cauce worker` processes")
    app = create_app(settings_factory(http={"idempotency_purge_cron": "* * * * * *"}))
    async with LifespanManager(app):
        resources = resources_of(app)
        assert PURGE_TASK in resources.tasks
        assert PURGE_TASK in [s.task for s in resources.tasks.schedules]
        async with unit_of_work(resources.db.sessionmaker) as session:
            session.add_all([_record("old", timedelta(hours=25)), _record("new", timedelta())])
        async with asyncio.timeout(15):
            while True:
                if await _keys(resources.db.sessionmaker) == {"new"}:
                    break
                await asyncio.sleep(0.1)


def test_the_purge_schedule_can_be_turned_off_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CAUCE_HTTP__IDEMPOTENCY_PURGE_CRON=off` (or empty) means no schedule."""
    monkeypatch.setenv("CAUCE_SECRET_KEY", "test-secret-key-0123456789abcdef0123456789")
    monkeypatch.setenv("CAUCE_DATA_DIR", str(tmp_path))
    for off in ("off", "", "null"):
        monkeypatch.setenv("CAUCE_HTTP__IDEMPOTENCY_PURGE_CRON", off)
        assert load_settings().http.idempotency_purge_cron is None
    monkeypatch.setenv("CAUCE_HTTP__IDEMPOTENCY_PURGE_CRON", "0 3 * * *")
    assert load_settings().http.idempotency_purge_cron == "0 3 * * *"


def test_an_invalid_purge_schedule_is_refused(tmp_path: Path) -> None:
    """A purge cron that is not a cron expression stops start-up with its name."""
    with pytest.raises(ValueError, match="not a cron expression"):
        make_settings(tmp_path, http={"idempotency_purge_cron": "every hour"})
    assert (
        make_settings(tmp_path, http={"idempotency_purge_cron": None}).http.idempotency_purge_cron
        is None
    )

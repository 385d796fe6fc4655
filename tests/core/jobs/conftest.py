"""Fixtures for the job engines: the same contract suite runs on both.

`backend` (from tests/conftest.py) picks the engine: SQLite -> embedded dispatcher,
PostgreSQL -> procrastinate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cauce.core.db import Database, create_database
from cauce.core.jobs.registry import TaskRegistry
from tests.conftest import make_settings
from tests.core.jobs.kits import EmbeddedKit, FakeClock, Kit

KitFactory = Callable[..., Awaitable[Kit]]


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    """This test's migrated database."""
    database = create_database(make_settings(tmp_path), url=database_url)
    yield database
    await database.dispose()


@pytest.fixture
def clock(backend: str) -> FakeClock:
    """A clock the embedded engine follows. procrastinate follows the database's clock, so
    on PostgreSQL this one starts at the real time and `advance` keeps it there."""
    if backend == "sqlite":
        return FakeClock(datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    return FakeClock(datetime.now(UTC))


@pytest.fixture
async def make_kit(backend: str, db: Database, clock: FakeClock) -> AsyncIterator[KitFactory]:
    """Build a kit for this test's engine from a populated registry."""
    kits: list[Kit] = []

    async def build(registry: TaskRegistry, **options: object) -> Kit:
        kit: Kit
        if backend == "sqlite":
            kit = EmbeddedKit(db, registry, clock, **options)  # type: ignore[arg-type]
        else:
            from tests.core.jobs.kits_pg import ProcrastinateKit

            kit = await ProcrastinateKit.create(db, registry, **options)  # type: ignore[arg-type]
        kits.append(kit)
        return kit

    yield build
    for kit in kits:
        await kit.stop()


async def advance(kit: Kit, clock: FakeClock, seconds: float) -> None:
    """Let `seconds` pass: instantly on the embedded engine's clock, really on PostgreSQL."""
    if isinstance(kit, EmbeddedKit):
        from datetime import timedelta

        clock.current += timedelta(seconds=seconds)
    else:
        await asyncio.sleep(seconds)
        clock.current = datetime.now(UTC)

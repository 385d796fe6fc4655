"""CRM delivery never cuts a database call half-way: a lane failure or a cancelled job
lets the write-backs in progress finish, so the CRM's answers are recorded and no
connection is left holding SQLite's write lock (or PostgreSQL row locks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.db.base import utcnow
from cauce.leads.delivery import _to_the_end, deliver
from cauce.leads.models import Lead
from cauce.leads.ports import CrmThrottled
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm, _add_leads, _statuses


@pytest.fixture
def lane_settings(settings_factory: SettingsFactory) -> Settings:
    # A short busy timeout: a lock left behind fails the last check in seconds.
    return settings_factory(
        crm={"provider": "hubspot", "delivery_lanes": 2}, db={"busy_timeout_ms": 5000}
    )


@pytest.fixture
async def db(lane_settings: Settings) -> AsyncIterator[Database]:
    database = create_database(lane_settings)
    yield database
    await database.dispose()


class RowLock:
    """Another transaction holding the write lock on some leads (on SQLite, the whole
    database's), until `release` is set: a write-back on them waits inside its call.
    Released, whatever happened, when the `async with` block ends."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.locked = asyncio.Event()
        self.release = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RowLock:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release.set()
        if self.task is not None:
            await self.task

    def hold(self, lead_ids: Sequence[int]) -> None:
        self.task = asyncio.create_task(self._hold(list(lead_ids)))

    async def _hold(self, lead_ids: list[int]) -> None:
        async with unit_of_work(self.db.sessionmaker) as session:
            await session.execute(
                update(Lead)
                .where(Lead.id.in_(lead_ids))
                .values(sync_attempts=Lead.sync_attempts)  # a no-op that takes the locks
            )
            self.locked.set()
            await self.release.wait()

    async def release_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.release.set()


async def _write_promptly(db: Database) -> float:
    """Seconds a fresh write on every lead took (it fails after a few seconds if a
    lock was left behind)."""
    started = time.monotonic()
    async with unit_of_work(db.sessionmaker) as session:
        if db.dialect == "postgresql":
            await session.execute(text("SET LOCAL lock_timeout = '5s'"))
        await session.execute(update(Lead).values(sync_attempts=Lead.sync_attempts))
    return time.monotonic() - started


async def test_a_lane_failure_lets_a_write_back_in_progress_finish(
    db: Database, lane_settings: Settings
) -> None:
    """One lane is throttled while the other waits inside the write-back of a batch the
    CRM accepted: that write-back completes (its leads are synced), then the error
    propagates, and the database takes a new write at once."""
    ids = await _add_leads(db, 200)
    crm = MemoryCrm()
    lock = RowLock(db)
    both_out = asyncio.Event()
    releasing: list[asyncio.Task[None]] = []

    async def hook() -> None:
        number = len(crm.batches)  # this call's: the hook runs before any other call
        if number == 1:
            await both_out.wait()  # both lanes have read their batch (SQLite: one writer)
            lock.hold([c.lead_id for c in crm.batches[0]])
            await lock.locked.wait()
            return  # the write-back of batch 1 now waits for the lock
        both_out.set()
        await lock.locked.wait()
        await asyncio.sleep(0.2)  # the other lane is inside its write-back of batch 1
        releasing.append(asyncio.create_task(lock.release_later(0.3)))
        raise CrmThrottled(utcnow() + timedelta(seconds=10), "DAILY")

    crm.on_call.append(hook)
    async with lock:
        with pytest.raises(CrmThrottled):
            await asyncio.wait_for(deliver(db.sessionmaker, crm, lane_settings.crm), 10)
        assert lock.release.is_set()  # deliver waited for the write-back
    await asyncio.gather(*releasing)
    assert [[c.lead_id for c in b] for b in crm.batches] == [ids[:100], ids[100:]]
    statuses = await _statuses(db)
    assert [i for i in ids if statuses[i] == "synced"] == ids[:100]
    assert [i for i in ids if statuses[i] == "pending"] == ids[100:]
    assert await _write_promptly(db) < 2.0


async def test_a_cancelled_delivery_finishes_its_write_back_first(
    db: Database, lane_settings: Settings
) -> None:
    """A delivery cancelled while one lane waits inside a write-back and the other is
    in its CRM call: the CRM call is cut (its leads stay pending), the write-back
    completes (its leads are synced), then the cancellation propagates."""
    ids = await _add_leads(db, 200)
    crm = MemoryCrm()
    lock = RowLock(db)
    both_out = asyncio.Event()
    never = asyncio.Event()

    async def hook() -> None:
        if len(crm.batches) == 1:
            await both_out.wait()
            lock.hold([c.lead_id for c in crm.batches[0]])
            await lock.locked.wait()
            return
        both_out.set()
        await never.wait()  # a CRM call still out when the job is cancelled

    crm.on_call.append(hook)
    async with lock:
        delivery = asyncio.create_task(deliver(db.sessionmaker, crm, lane_settings.crm))
        async with asyncio.timeout(10):
            await lock.locked.wait()
        await asyncio.sleep(0.2)  # lane 0 is inside its write-back
        delivery.cancel()
        releasing = asyncio.create_task(lock.release_later(0.3))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(delivery), 10)
        assert lock.release.is_set()  # the cancellation waited for the write-back
    await releasing
    statuses = await _statuses(db)
    assert [i for i in ids if statuses[i] == "synced"] == ids[:100]
    assert [i for i in ids if statuses[i] == "pending"] == ids[100:]
    assert await _write_promptly(db) < 2.0


async def test_database_work_outlives_repeated_cancellations() -> None:
    """The work `_to_the_end` runs is never cut, however often its caller is cancelled;
    the caller's cancellation is raised once the work has ended."""
    release = asyncio.Event()
    finished: list[str] = []

    async def work() -> str:
        await release.wait()
        finished.append("work")
        return "done"

    caller = asyncio.create_task(_to_the_end(work()))
    for _ in range(3):
        await asyncio.sleep(0.01)
        caller.cancel()
        await asyncio.sleep(0.01)
        assert not caller.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ["work"]
    assert await _to_the_end(work()) == "done"  # uncancelled: the work's result

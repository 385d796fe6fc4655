"""Keys claimed by a request that builds its answer in parts (Stripe's recovery points).

A claim holds the key for one request (its `owner` token) while its lease lasts; each
part stores the answer so far and renews it; the last part stores the whole answer. A
request that stopped is taken over once its lease ends (at once after `release`), and
the retry goes on from what it stored; the stopped one can then store nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.web.idempotency import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyKeyUnfinished,
    IdempotencyRecord,
    IdempotencyStore,
    KeyClaim,
    StoredResponse,
)
from tests.conftest import SettingsFactory

SCOPE, KEY, PRINT = "7", "lote", "f" * 64
STORE = IdempotencyStore()


@pytest.fixture
async def db(settings_factory: SettingsFactory) -> AsyncIterator[Database]:
    database = create_database(settings_factory())
    yield database
    await database.dispose()


async def _claim(db: Database, print_: str = PRINT) -> StoredResponse | KeyClaim:
    async with unit_of_work(db.sessionmaker) as session:
        return await STORE.claim(session, SCOPE, KEY, print_)


async def _new_claim(db: Database) -> KeyClaim:
    got = await _claim(db)
    assert isinstance(got, KeyClaim)
    return got


async def _age(db: Database, **values: object) -> None:
    async with unit_of_work(db.sessionmaker) as session:
        await session.execute(update(IdempotencyRecord).values(**values))


async def test_a_claim_holds_the_key_while_its_lease_lasts(db: Database) -> None:
    claim = await _new_claim(db)
    assert claim.done is None

    with pytest.raises(IdempotencyKeyUnfinished) as again:
        await _claim(db)
    assert 1 <= again.value.retry_after <= STORE.lease.total_seconds()
    async with db.sessionmaker() as session:
        with pytest.raises(IdempotencyKeyUnfinished):  # a whole-answer request waits too
            await STORE.lookup(session, SCOPE, KEY, PRINT)
        with pytest.raises(IdempotencyKeyReused):  # another request under the key: 422
            await STORE.claim(session, SCOPE, KEY, "0" * 64)
    with pytest.raises(IdempotencyKeyInUse):
        async with unit_of_work(db.sessionmaker) as session:
            await STORE.remember(session, SCOPE, KEY, PRINT, 200, {})


async def test_a_stopped_claim_is_taken_over_with_its_parts_and_can_store_no_more(
    db: Database,
) -> None:
    first = await _new_claim(db)
    async with unit_of_work(db.sessionmaker) as session:
        await STORE.progress(session, first, {"items": [{"index": 0}]})
    await _age(db, leased_until=utcnow() - timedelta(seconds=1))  # its process died

    second = await _new_claim(db)

    assert second.owner != first.owner
    assert second.done == {"items": [{"index": 0}]}
    with pytest.raises(IdempotencyKeyUnfinished):
        async with unit_of_work(db.sessionmaker) as session:
            await STORE.progress(session, first, {"items": []})
    with pytest.raises(IdempotencyKeyUnfinished):
        async with unit_of_work(db.sessionmaker) as session:
            await STORE.finish(session, first, 200, {"late": True})
    async with unit_of_work(db.sessionmaker) as session:
        await STORE.finish(session, second, 200, {"whole": True})
    assert await _claim(db) == StoredResponse(200, {"whole": True})
    async with db.sessionmaker() as session:
        assert await STORE.lookup(session, SCOPE, KEY, PRINT) == StoredResponse(
            200, {"whole": True}
        )


async def test_a_released_claim_is_taken_over_at_once(db: Database) -> None:
    first = await _new_claim(db)
    async with unit_of_work(db.sessionmaker) as session:
        await STORE.release(session, first)
    second = await _new_claim(db)
    assert second.owner != first.owner


async def test_a_stopped_claim_past_the_keys_ttl_is_a_new_one(db: Database) -> None:
    first = await _new_claim(db)
    async with unit_of_work(db.sessionmaker) as session:
        await STORE.progress(session, first, {"items": [{"index": 0}]})
    await _age(
        db, created_at=utcnow() - timedelta(hours=25), leased_until=utcnow() - timedelta(seconds=1)
    )
    second = await _new_claim(db)
    assert second.done is None


async def test_two_retries_take_a_stopped_claim_over_once(db: Database) -> None:
    await _new_claim(db)
    await _age(db, leased_until=utcnow() - timedelta(seconds=1))

    got = await asyncio.gather(_claim(db), _claim(db), return_exceptions=True)

    assert sum(isinstance(g, KeyClaim) for g in got) == 1, got
    assert sum(isinstance(g, IdempotencyKeyInUse) for g in got) == 1, got


async def test_a_retry_does_not_take_over_a_part_at_work(db: Database) -> None:
    """The lease ran out while a part worked (it waited long for the intake locks). The
    part holds the claim from its start, so the retry waits for it (PostgreSQL: the row's
    lock; SQLite: the writer) and, the part committed, finds the lease renewed: 409. It
    must not go on from what it read before the part stored its progress."""
    first = await _new_claim(db)
    await _age(db, leased_until=utcnow() - timedelta(seconds=1))
    async with unit_of_work(db.sessionmaker) as session:
        await STORE.hold(session, first)
        retry = asyncio.create_task(_claim(db))
        await asyncio.sleep(0.3)  # the retry reads, then waits for this part
        assert not retry.done()
        await STORE.progress(session, first, {"items": [{"index": 0}, {"index": 1}]})

    with pytest.raises(IdempotencyKeyUnfinished):
        await retry
    await _age(db, leased_until=utcnow() - timedelta(seconds=1))
    later = await _new_claim(db)
    assert later.done == {"items": [{"index": 0}, {"index": 1}]}


async def test_a_claim_at_work_outlives_the_ttl_and_a_stopped_one_does_not(db: Database) -> None:
    await _new_claim(db)
    await _age(db, created_at=utcnow() - timedelta(hours=25))  # its lease still holds
    async with unit_of_work(db.sessionmaker) as session:
        assert await STORE.purge(session) == 0
    with pytest.raises(IdempotencyKeyUnfinished):
        await _claim(db)
    await _age(db, leased_until=utcnow() - timedelta(seconds=1))
    async with unit_of_work(db.sessionmaker) as session:
        assert await STORE.purge(session) == 1


async def test_an_answer_being_built_is_not_answered_yet(db: Database) -> None:
    claim = await _new_claim(db)
    async with db.sessionmaker() as session:
        assert not await STORE.answered(session, SCOPE, KEY)
    async with unit_of_work(db.sessionmaker) as session:
        await STORE.finish(session, claim, 200, {})
    async with db.sessionmaker() as session:
        assert await STORE.answered(session, SCOPE, KEY)

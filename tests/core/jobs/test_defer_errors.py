"""A database error inside `defer` reaches the caller as SQLAlchemy's error, and the
caller's transaction leaves nothing behind."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DataError

from cauce.core.db import Database, unit_of_work
from cauce.core.jobs.ports import JobContext, JobFilter, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from tests.core.jobs.conftest import KitFactory


async def test_failed_defer_raises_sqlalchemy_error_and_rolls_back(
    make_kit: KitFactory, db: Database, backend: str
) -> None:
    """PostgreSQL's queue name holds 128 characters: a longer one fails the INSERT, which
    the PostgreSQL engine sends straight through psycopg; the caller still sees
    SQLAlchemy's DataError (the API maps SQLAlchemy's errors), and the job deferred
    before it in the same transaction is gone too."""
    if backend != "postgresql":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    registry = TaskRegistry()

    @registry.task("noop")
    async def noop(ctx: JobContext, payload: JsonDict) -> None:
        return None

    kit = await make_kit(registry)

    async def defer_two() -> None:
        async with unit_of_work(db.sessionmaker) as session:
            await kit.queue.defer(session, "noop", {"n": 1})
            await kit.queue.defer(session, "noop", {"n": 2}, queue="q" * 200)

    with pytest.raises(DataError):
        await defer_two()
    assert await kit.queue.list(JobFilter()) == []
    async with unit_of_work(db.sessionmaker) as session:
        await kit.queue.defer(session, "noop", {"n": 3})
    assert [job.payload for job in await kit.queue.list(JobFilter())] == [{"n": 3}]

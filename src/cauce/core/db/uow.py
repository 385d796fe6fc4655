"""The unit of work: the one place that commits (DESIGN.md §4.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """Yield a session; commit when the block succeeds, roll back when it raises.

    Application code only `flush()`es; the request or job boundary owns the commit, so the
    business rows and the jobs deferred with them are written together or not at all.
    """
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()

"""Intake's candidates as matching needs them: read, prepared, and kept across intakes.

`read_candidates` serves the stored leads an intake will compare from the process cache
(`KnownLeads`) when they are still at the version held, and reads and prepares the rest.
What an intake read or wrote joins the cache only when its transaction commits
(`hold_on_commit`): a rollback, a savepoint's included, drops it (ADR 0010).

`warm` fills an empty cache when a process starts, so the first intakes after a restart
do not read and prepare every candidate again (at 200,000 stored leads they ran at half
the rate until the cache had filled). `forget_erased` drops the leads another process
erased: the process that erases forgets at once, and no cache serves an erased lead (it
is no one's candidate), but its copy should not stay in memory either.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db import on_commit
from cauce.leads import repository as repo
from cauce.leads.matching.known import Known, KnownLeads

log = structlog.get_logger(__name__)


async def read_candidates(
    session: AsyncSession, cache: KnownLeads, wanted: set[int]
) -> dict[int, Known]:
    """The candidates not erased, prepared: from `cache` when it holds them at their
    current version (one narrow read of the versions), the rest read and prepared; those
    join the cache if the transaction commits (`_hold_after_commit`)."""
    found: dict[int, Known] = {}
    if any(lead_id in cache for lead_id in wanted):
        missing: list[int] = []
        for lead_id, version in await repo.live_versions(session, wanted):
            known = cache.get(lead_id, version)
            if known is None:
                missing.append(lead_id)
            else:
                found[lead_id] = known
    else:  # a cold cache: one read
        missing = list(wanted)
    read = {
        lead_id: Known.read(version, uid, values)
        for lead_id, uid, version, values in await repo.match_rows(session, missing)
    }
    hold_on_commit(session, cache, read)
    found.update(read)
    return found


def hold_on_commit(session: AsyncSession, cache: KnownLeads, leads: dict[int, Known]) -> None:
    """Keep `leads` in `cache` if the session's transaction commits (never before; any
    rollback, a savepoint's included, drops them: what was read may have been undone)."""
    if leads:

        def hold() -> None:
            for lead_id, known in leads.items():
                cache.hold(lead_id, known)

        on_commit(session, hold)


# Leads a warm-up reads a transaction (~15-20 ms of preparing: it hands the loop a turn
# after each page).
WARM_PAGE = 1000


async def warm(sessionmaker: async_sessionmaker[AsyncSession], cache: KnownLeads) -> int:
    """Fill `cache`'s free room with the stored leads not erased, newest first, one page
    a transaction; how many it read. What intake holds meanwhile stays (`offer` only
    fills room): a warm-up never evicts, and stops when the cache is full."""
    started, offered, before = time.monotonic(), 0, None
    while (room := cache.room()) > 0:
        async with sessionmaker() as session:
            rows = await repo.newest_match_rows(session, before, min(room, WARM_PAGE))
            read = {
                lead_id: Known.read(version, uid, values) for lead_id, uid, version, values in rows
            }

            def offer(read: dict[int, Known] = read) -> None:
                for lead_id, known in read.items():
                    cache.offer(lead_id, known)

            on_commit(session, offer)
            await session.commit()
        offered += len(rows)
        if len(rows) < min(room, WARM_PAGE):
            break
        before = rows[-1][0]
        await asyncio.sleep(0)
    log.info(
        "leads.candidates_warmed",
        read=offered,
        held=len(cache),
        seconds=round(time.monotonic() - started, 2),
    )
    return offered


async def forget_erased(
    sessionmaker: async_sessionmaker[AsyncSession], cache: KnownLeads, after: int
) -> int:
    """Forget the leads erased since history row `after` (by any process); the newest
    history row's id, where the next call may start."""
    async with sessionmaker() as session:
        erased, newest = await repo.erased_since(session, after)
    for lead_id in erased:
        cache.forget(lead_id)
    return newest


async def forget_erased_at_or_after(
    sessionmaker: async_sessionmaker[AsyncSession], cache: KnownLeads, since: datetime
) -> None:
    """Forget the leads erased at `since` or later (by any process)."""
    async with sessionmaker() as session:
        erased = await repo.erased_at_or_after(session, since)
    for lead_id in erased:
        cache.forget(lead_id)


async def last_history_id(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Where `forget_erased` starts: the newest history row now."""
    async with sessionmaker() as session:
        return await repo.last_history_id(session)

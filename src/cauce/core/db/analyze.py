"""The query planner's statistics on SQLite (`ANALYZE`), refreshed by a periodic job.

Without them SQLite's planner guesses how many rows a condition keeps, and an equality
always looks more selective than a range: `GET /v1/leads?country=ES&created_after=...`
walked every Spanish lead by `ix_leads_country` instead of the few created in the
range by `ix_leads_created` (68 ms -> 4 ms at 123,000 leads, and 1.5 s on a colder
disk at 202,000). `ANALYZE` counts, per index, how many rows each value keeps; SQLite
never does it by itself. It takes the write lock for its run (~0.1 s for the leads
table at 123,000 leads, ~0.25 s for the whole database), so it runs hourly
(`db.analyze_cron`), not per request. Pooled connections then reopen to load the new
statistics (`planner_stats`). PostgreSQL's autovacuum analyzes on its own: the
job is only scheduled on SQLite.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.planner_stats import changed
from cauce.core.db.uow import unit_of_work

log = structlog.get_logger("cauce.db")

ANALYZE_TASK = "core.db_analyze"


async def analyze(sessionmaker: async_sessionmaker[AsyncSession]) -> float:
    """Refresh SQLite's statistics of every table and index; the seconds it took."""
    started = time.monotonic()
    async with unit_of_work(sessionmaker) as session:  # ANALYZE writes sqlite_stat1
        await session.execute(text("ANALYZE"))
        database = session.get_bind().engine.url.database
    if database:
        changed(database)  # the pool's connections reopen to load them
    seconds = time.monotonic() - started
    log.info("db.analyzed", seconds=round(seconds, 3))
    return seconds

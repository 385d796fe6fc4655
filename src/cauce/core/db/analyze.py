"""The query planner's statistics on SQLite (`ANALYZE`), refreshed by a periodic job.

Without them SQLite's planner guesses how many rows a condition keeps, and an equality
always looks more selective than a range: `GET /v1/leads?country=ES&created_after=...`
walked every Spanish lead by `ix_leads_country` instead of the few created in the
range by `ix_leads_created` (68 ms -> 4 ms at 123,000 leads, and 1.5 s on a colder
disk at 202,000). `ANALYZE` counts, per index, how many rows each value keeps; SQLite
never does it by itself. It takes the write lock for its run (~0.1 s for the leads
table at 123,000 leads, ~0.25 s for the whole database), so it runs hourly
(`db.analyze_cron`), not per request. Pooled connections then reopen to load the new
statistics (`planner_stats`).

PostgreSQL's autovacuum analyzes on its own for the planner, but only once ~10 % of a
table's rows changed since the last time, and its statistics hold column values (the
most common ones, histogram bounds): a GDPR erasure's email, phone and name stayed in
`pg_stats` until then, on a large table for weeks (found by a GDPR audit, helper-147).
There the job analyzes the tables with any row changed since their last analyze
(`pg_stat_user_tables.n_mod_since_analyze`), each a sample of at most 30,000 rows, on the
same schedule, and when an erasure asks for it (`request_analyze`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.planner_stats import changed
from cauce.core.db.uow import unit_of_work

log = structlog.get_logger("cauce.db")

ANALYZE_TASK = "core.db_analyze"


async def analyze(
    sessionmaker: async_sessionmaker[AsyncSession], tables: Sequence[str] = ()
) -> float:
    """Refresh the planner's statistics (module doc): on PostgreSQL of `tables` (those of
    them that exist), or of every table changed since its last analyze; the seconds it
    took."""
    started = time.monotonic()
    async with unit_of_work(sessionmaker) as session:  # ANALYZE writes sqlite_stat1
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            tables = await _tables(session, tables)
            if tables:
                await session.execute(text(f"ANALYZE {', '.join(tables)}"))
        else:
            tables = []
            await session.execute(text("ANALYZE"))
        database = bind.engine.url.database
    if database and bind.dialect.name == "sqlite":
        changed(database)  # the pool's connections reopen to load them
    seconds = time.monotonic() - started
    log.info("db.analyzed", seconds=round(seconds, 3), tables=len(tables) or None)
    return seconds


async def _tables(session: AsyncSession, named: Sequence[str]) -> list[str]:
    """PostgreSQL: the tables of this schema `named` gives, or (none named) those with a
    row inserted, updated or deleted since their last analyze (by autovacuum or by this
    job); quoted for ANALYZE. Named ones are analyzed whatever the counts say: a
    backend reports its changes to them up to seconds after it committed."""
    if named:
        rows = await session.execute(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables"
                " WHERE schemaname = current_schema() AND tablename = ANY(:named)"
                " ORDER BY tablename"
            ),
            {"named": list(named)},
        )
    else:
        rows = await session.execute(
            text(
                "SELECT quote_ident(relname) FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema() AND n_mod_since_analyze > 0"
                " ORDER BY relname"
            )
        )
    return [str(name) for (name,) in rows]

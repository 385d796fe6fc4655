"""Asking for `core.db_analyze` (`core.db.analyze`) from a transaction: an erasure's
values leave PostgreSQL's planner statistics at once, not at the next hourly run."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db.analyze import ANALYZE_TASK
from cauce.core.jobs.ports import JobQueue


async def request_analyze(session: AsyncSession, queue: JobQueue, tables: Sequence[str]) -> None:
    """On PostgreSQL, have `tables` analyzed soon, in `session`'s transaction: their
    statistics may hold values just erased (module doc). One such job waits at a time
    (later requests while it waits are the same job); SQLite's hold counts only."""
    if session.get_bind().dialect.name != "postgresql":
        return
    await queue.defer(
        session,
        ANALYZE_TASK,
        {"tables": sorted(set(tables))},
        dedupe_key=f"{ANALYZE_TASK}:{','.join(sorted(set(tables)))}",
    )

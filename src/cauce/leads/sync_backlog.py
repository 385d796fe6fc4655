"""The CRM backlog as gauges: how many live leads are not in the CRM, and how long the
oldest pending change has waited.

The job queue's gauges cannot show it: during an outage or a rate limit the one delivery
job per account is postponed (not due), whatever the number of leads waiting behind it.
Read before each scrape of `/metrics`, only when a CRM is configured (without one, every
lead stays pending for good).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.leads.metrics import LeadsMetrics
from cauce.leads.models import Lead

STATUSES = ("pending", "failed", "held")

# Counted through `ix_leads_sync` (sync_status, id); the oldest reads the pending rows.
_BACKLOG = (
    select(Lead.sync_status, func.count(), func.min(Lead.updated_at))
    .where(Lead.sync_status.in_(STATUSES), Lead.erased_at.is_(None))
    .group_by(Lead.sync_status)
)


async def refresh_sync_gauges(
    sessionmaker: async_sessionmaker[AsyncSession], metrics: LeadsMetrics
) -> None:
    """Set `cauce_leads_sync_backlog{status}` and `..._oldest_pending_seconds` from the
    database, in a short read-only transaction."""
    counts = dict.fromkeys(STATUSES, 0)
    oldest: datetime | None = None
    async with sessionmaker() as session:
        for status, count, first in (await session.execute(_BACKLOG)).all():
            counts[status] = int(count)
            if status == "pending":
                oldest = first
    for status, count in counts.items():
        metrics.sync_backlog.labels(status).set(count)
    age = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
    metrics.sync_oldest_pending.set(age)


__all__ = ["STATUSES", "refresh_sync_gauges"]

"""The CRM backlog as gauges: how many live leads are not in the CRM, how long the oldest
pending change has waited, and the erasures the CRM still owes.

The job queue's gauges cannot show it: during an outage or a rate limit the one delivery
job per account is postponed (not due), whatever the number of leads waiting behind it;
and a `crm.erase` job that failed for good is purged after `jobs.retention_failed_days`,
while its tombstone keeps saying the erasure is owed (`ERASE_FAILED`).
Read before each scrape of `/metrics`, only when a CRM is configured (without one, every
lead stays pending for good).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.leads.metrics import LeadsMetrics
from cauce.leads.models import Lead

STATUSES = ("pending", "failed", "held")

# `sync_status` of a tombstone (`erased_at` set) as to the CRM (a merged one's is
# `service_edit.MERGED`: a held lead was never delivered). An erasure is owed to the CRM
# while its `crm.erase` job is queued, retrying or postponed (ERASING), and when the CRM
# refused it for good or the job gave up, out of attempts or postponements (ERASE_FAILED:
# `last_sync_error` says why, by status code and error category or the kind of error,
# and the attempts and postponements spent: `tasks.erasure_failure`, `erasure_gave_up`);
# ERASED once the CRM has no such contact (its deletion, or a 404), when no CRM is
# configured, or when the CRM deleted the contact itself (a GDPR deletion there). Tombstones
# from before these states say ERASED whatever happened. All fit `sync_status`'s 16 chars.
ERASING = "erasing"
ERASE_FAILED = "erase_failed"
ERASED = "erased"
# The owed states, as `cauce_crm_erasures_owed{state}` and `cauce leads erasures` name them.
OWED = {ERASING: "pending", ERASE_FAILED: "failed"}

# Counted through `ix_leads_sync` (sync_status, id); the oldest reads the pending rows.
_BACKLOG = (
    select(Lead.sync_status, func.count(), func.min(Lead.updated_at))
    .where(Lead.sync_status.in_(STATUSES), Lead.erased_at.is_(None))
    .group_by(Lead.sync_status)
)
# Through the same index: tombstones owed to the CRM are few (each one a person's request).
# How long pending: since the tombstone became so (`updated_at`: the erasure, or a later
# `erase_again` or `--retry`), not since the erasure (one owed again hours after it looked
# hours old at once, and `CauceCrmErasureStale` fired).
_OWED = (
    select(Lead.sync_status, func.count(), func.min(Lead.updated_at))
    .where(Lead.sync_status.in_(OWED), Lead.erased_at.is_not(None))
    .group_by(Lead.sync_status)
)


async def refresh_sync_gauges(
    sessionmaker: async_sessionmaker[AsyncSession], metrics: LeadsMetrics
) -> None:
    """Set `cauce_leads_sync_backlog{status}`, `..._oldest_pending_seconds`,
    `cauce_crm_erasures_owed{state}` and `cauce_crm_erasures_oldest_pending_seconds`
    from the database, in a short read-only transaction."""
    counts = dict.fromkeys(STATUSES, 0)
    owed = dict.fromkeys(OWED.values(), 0)
    oldest: datetime | None = None
    oldest_erasure: datetime | None = None
    async with sessionmaker() as session:
        for status, count, first in (await session.execute(_BACKLOG)).all():
            counts[status] = int(count)
            if status == "pending":
                oldest = first
        for state, number, since in (await session.execute(_OWED)).all():
            owed[OWED[state]] = int(number)
            if state == ERASING:
                oldest_erasure = since
    for status, count in counts.items():
        metrics.sync_backlog.labels(status).set(count)
    metrics.sync_oldest_pending.set(_age(oldest))
    for state, count in owed.items():
        metrics.erasures_owed.labels(state).set(count)
    metrics.erasures_oldest_pending.set(_age(oldest_erasure))


def _age(since: datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (utcnow() - since).total_seconds())


@dataclass(frozen=True, slots=True)
class OwedErasure:
    """An erasure the CRM still owes, as `cauce leads erasures` lists it: nothing of the
    person (the lead's random id, dates, a reason made of a status code and a category)."""

    uid: str
    state: str  # "pending" or "failed" (`OWED`)
    erased_at: datetime | None  # set on every tombstone (typed as the column)
    changed_at: datetime  # when it became pending or failed
    reason: str | None


async def owed_erasures(session: AsyncSession) -> list[OwedErasure]:
    """Every erasure the CRM still owes, the oldest first."""
    rows = await session.execute(
        select(Lead.uid, Lead.sync_status, Lead.erased_at, Lead.updated_at, Lead.last_sync_error)
        .where(Lead.sync_status.in_(OWED), Lead.erased_at.is_not(None))
        .order_by(Lead.erased_at, Lead.id)
    )
    return [
        OwedErasure(uid, OWED[status], erased_at, updated_at, error)
        for uid, status, erased_at, updated_at, error in rows.all()
    ]


__all__ = [
    "ERASED",
    "ERASE_FAILED",
    "ERASING",
    "OWED",
    "STATUSES",
    "OwedErasure",
    "owed_erasures",
    "refresh_sync_gauges",
]

"""Retention of the webhook inbox: the periodic `crm.inbox_purge` job.

Every HubSpot event is kept as a row of `webhook_inbox` (`webhooks.record_events`), and
its unique (source, eventId) is what makes a redelivered event change nothing. HubSpot
retries a failed delivery up to 10 times over about 24 hours, so a processed row must
outlive that; past `crm.webhook_inbox_retention_days` (7 by default, at least 2) after it
was processed it has no use left and goes. A processed row still holds the event as
HubSpot sent it, the contact's HubSpot id among it (a value Cauce took no status from is
dropped when processed): keeping it forever would keep that too.

Unprocessed rows are never deleted, whatever their age: they are work still owed. Rows
go in chunks of `PURGE_CHUNK`, each in a transaction of its own, oldest first, so a long
backlog never holds SQLite's write lock (or PostgreSQL's row locks) for long.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.registry import TaskRegistry, TaskSpec
from cauce.leads.models import WebhookInboxEvent

log = structlog.get_logger("cauce.leads.webhooks")

PURGE_TASK = "crm.inbox_purge"
PURGE_CHUNK = 1000


async def purge_inbox(
    sessionmaker: async_sessionmaker[AsyncSession],
    retention: timedelta,
    *,
    chunk: int = PURGE_CHUNK,
    now: datetime | None = None,
) -> int:
    """Delete the events processed more than `retention` ago, `chunk` rows per
    transaction; returns how many went."""
    cutoff = (now or utcnow()) - retention
    # `processed_at < cutoff` leaves the unprocessed rows (NULL) out, and walks the
    # (processed_at, id) index the inbound job reads its pending rows by.
    old = WebhookInboxEvent.processed_at < cutoff
    oldest = (
        select(WebhookInboxEvent.id)
        .where(old)
        .order_by(WebhookInboxEvent.processed_at, WebhookInboxEvent.id)
        .limit(chunk)
    )
    purged = 0
    while True:
        async with unit_of_work(sessionmaker) as session:
            result = await session.execute(
                delete(WebhookInboxEvent)
                .where(WebhookInboxEvent.id.in_(oldest), old)
                .execution_options(synchronize_session=False)
            )
        deleted = int(getattr(result, "rowcount", 0) or 0)
        purged += deleted
        if deleted < chunk:
            return purged
        await asyncio.sleep(0)  # the other writers' turn between chunks


def register_inbox_purge(
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    retention: timedelta,
    cron: str | None,
) -> None:
    """Register `crm.inbox_purge`, and run it on `cron` (None: only when deferred by hand)."""

    async def purge(_ctx: JobContext, _payload: JsonDict) -> None:
        purged = await purge_inbox(sessionmaker, retention)
        log.info("crm.inbox.purged", events=purged, retention_days=retention / timedelta(days=1))

    # One attempt: a failed purge is simply done again by the next period, and what it
    # deleted before failing stays deleted (each chunk commits on its own).
    registry.add(TaskSpec(PURGE_TASK, purge, policy=RetryPolicy(max_attempts=1)))
    if cron is not None:
        registry.schedule(cron, PURGE_TASK)

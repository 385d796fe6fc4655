"""The webhook inbox's retention (`crm.inbox_purge`): processed events go after
`crm.webhook_inbox_retention_days`, in chunks; unprocessed ones never; a redelivery
within the retention is still recorded once. Before, the inbox was never purged (about
a row per lead for good)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.errors import ConfigError
from cauce.core.jobs.registry import TaskRegistry
from cauce.leads.models import WebhookInboxEvent
from cauce.leads.tasks import LeadsTaskDeps, register_leads_tasks
from cauce.leads.webhooks import SOURCE_HUBSPOT, parse_events, process_inbox, record_events
from cauce.leads.webhooks_purge import PURGE_TASK, purge_inbox
from tests.conftest import SettingsFactory, make_settings

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@pytest.fixture
async def db(settings_factory: SettingsFactory) -> AsyncIterator[Database]:
    database = create_database(settings_factory())
    yield database
    await database.dispose()


async def _row(db: Database, event_id: str, *, age: timedelta, processed: bool) -> None:
    """An event received `age` ago, processed then too (or not at all)."""
    at = utcnow() - age
    async with unit_of_work(db.sessionmaker) as session:
        session.add(
            WebhookInboxEvent(
                source=SOURCE_HUBSPOT,
                event_id=event_id,
                payload={"eventId": event_id, "objectId": 501},
                received_at=at,
                processed_at=at if processed else None,
                outcome="ignored:unknown_contact" if processed else None,
            )
        )


async def _event_ids(db: Database) -> set[str]:
    async with db.sessionmaker() as session:
        return set((await session.scalars(select(WebhookInboxEvent.event_id))).all())


async def test_old_processed_events_go_in_chunks_unprocessed_and_recent_stay(
    db: Database,
) -> None:
    """Processed more than the retention ago: deleted, over several chunks. Processed
    recently, or never processed however old: kept."""
    for n in range(5):
        await _row(db, f"old-{n}", age=WEEK + DAY * (n + 1), processed=True)
    await _row(db, "recent", age=DAY, processed=True)
    await _row(db, "pending-old", age=DAY * 90, processed=False)
    await _row(db, "pending-new", age=timedelta(0), processed=False)

    assert await purge_inbox(db.sessionmaker, WEEK, chunk=2) == 5
    assert await _event_ids(db) == {"recent", "pending-old", "pending-new"}
    assert await purge_inbox(db.sessionmaker, WEEK, chunk=2) == 0  # nothing more


async def test_a_redelivered_event_within_the_retention_is_still_recorded_once(
    db: Database,
) -> None:
    """HubSpot sends a failed delivery again for about a day: the processed row is kept
    past that, and the redelivery changes nothing. Only once the row is gone would the
    same event id be recorded anew."""
    body = orjson.dumps([{"eventId": 77, "objectId": 501, "subscriptionType": "contact.deletion"}])
    async with unit_of_work(db.sessionmaker) as session:
        assert await record_events(session, SOURCE_HUBSPOT, parse_events(body)) == 1
    async with unit_of_work(db.sessionmaker) as session:
        assert await process_inbox(session) == 1

    assert await purge_inbox(db.sessionmaker, WEEK, now=utcnow() + DAY * 2) == 0
    async with unit_of_work(db.sessionmaker) as session:
        assert await record_events(session, SOURCE_HUBSPOT, parse_events(body)) == 0
    assert await _event_ids(db) == {"77"}

    assert await purge_inbox(db.sessionmaker, WEEK, now=utcnow() + WEEK + DAY) == 1
    async with unit_of_work(db.sessionmaker) as session:
        assert await record_events(session, SOURCE_HUBSPOT, parse_events(body)) == 1


async def test_the_job_purges_through_the_job_engine(settings_factory: SettingsFactory) -> None:
    """`crm.inbox_purge`, registered by the leads context, deferred and run by a worker,
    deletes with the configured retention."""
    settings = settings_factory(
        crm={"webhook_inbox_retention_days": 3}, jobs={"embedded_worker": False}
    )
    app = create_app(settings)
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        assert PURGE_TASK in resources.tasks
        db = resources.db
        await _row(db, "four-days", age=DAY * 4, processed=True)
        await _row(db, "two-days", age=DAY * 2, processed=True)
        async with unit_of_work(db.sessionmaker) as session:
            await resources.jobs.defer(session, PURGE_TASK, {})
        await job_worker_for(resources).run_until_idle(30)
        assert await _event_ids(db) == {"two-days"}
        async with db.sessionmaker() as session:
            count = await session.scalar(select(func.count()).select_from(WebhookInboxEvent))
        assert count == 1


def _schedules(tmp_path: Path, **crm: object) -> list[str]:
    settings = make_settings(tmp_path, crm=crm)
    registry = TaskRegistry()
    database = create_database(settings)  # not connected: registration reads no row
    register_leads_tasks(registry, LeadsTaskDeps(settings, database.sessionmaker, None))
    assert PURGE_TASK in registry
    return [s.cron for s in registry.schedules if s.task == PURGE_TASK]


def test_the_purge_is_scheduled_unless_off(tmp_path: Path) -> None:
    """Hourly by default, on the configured cron, and not at all with `off`."""
    assert _schedules(tmp_path) == ["29 * * * *"]
    assert _schedules(tmp_path, webhook_inbox_purge_cron="5 3 * * *") == ["5 3 * * *"]
    assert _schedules(tmp_path, webhook_inbox_purge_cron="off") == []


@pytest.mark.parametrize("days", [0, 1, 1.5])
def test_a_retention_shorter_than_hubspot_s_redeliveries_is_refused(
    tmp_path: Path, days: float
) -> None:
    """Below 2 days a redelivery could find its row gone, and be applied again."""
    with pytest.raises((ConfigError, ValueError), match="webhook_inbox_retention_days"):
        make_settings(tmp_path, crm={"webhook_inbox_retention_days": days})

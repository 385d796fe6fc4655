"""Review 151: Pipedrive creates in doubt meet an erasure, and a non-waiting redelivery.

Both tests failed on 88d854f.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from cauce.core.db import Database, unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.http import HttpClients
from cauce.core.jobs.ports import RetryLater
from cauce.leads.delivery import DELIVER_TASK, ERASE_TASK, REDELIVER_TASK
from cauce.leads.models import Lead
from tests.conftest import SettingsFactory
from tests.leads.adapters.conftest import ManualClock, WallClock
from tests.leads.adapters.fake_pipedrive import FakePipedrive
from tests.leads.adapters.test_pipedrive_create_in_doubt import (
    Jobs,
    _later_by,
    _sync_state,
    _worker,
    fake,
)
from tests.leads.test_crm_clears import _store, clients, db

__all__ = ["clients", "db", "fake"]  # fixtures


async def _uid(db: Database, lead_id: int) -> str:
    async with db.sessionmaker() as session:
        uid = await session.scalar(select(Lead.uid).where(Lead.id == lead_id))
        assert uid is not None
        return str(uid)


async def test_an_erasure_while_a_create_is_in_doubt_waits_until_the_person_shows(
    db: Database,
    settings_factory: SettingsFactory,
    clients: HttpClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
) -> None:
    """A create's answer is lost (Pipedrive made the person); the person asks to be
    erased a second later. The crm.erase job searched the lagging index by Cauce id,
    found nobody, and the tombstone said `erased` while Pipedrive held the person, for
    good (the waiting redelivery skips erased leads). Now nothing found is no proof while
    such a create may not show yet: the job is put off until it would, then deletes it."""
    fake.lose_create_answers = [503]
    jobs = Jobs(db, settings_factory, _worker(clients, fake, wall))
    account = jobs.settings.crm.account
    ana = await _store(db, email="ana@bodegas.es", first_name="Ana")
    await jobs.run(DELIVER_TASK, {"account": account})
    assert len(fake.persons) == 1  # made, its answer lost
    assert (await _sync_state(db, ana))[2].since is not None  # in doubt
    uid = await _uid(db, ana)

    async def erased(doubt_since: datetime) -> None:
        """What service_edit.erase leaves (personal fields cleared, owed to the CRM),
        the doubt dated on the erase job's clock (the real one)."""
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(
                update(Lead)
                .where(Lead.id == ana)
                .values(
                    erased_at=utcnow(),
                    email=None,
                    email_key=None,
                    first_name=None,
                    sync_status="erasing",
                    crm_create_doubt_at=doubt_since,
                    version=Lead.version + 1,
                )
            )

    await erased(utcnow() - timedelta(seconds=1))
    _later_by(wall, sandbox_clock, 1)  # Pipedrive's search does not show the person yet
    with pytest.raises(RetryLater) as put_off:
        await jobs.run(ERASE_TASK, {"account": account, "uid": uid})
    assert put_off.value.at > utcnow() + timedelta(seconds=50)
    assert len(fake.persons) == 1
    async with db.sessionmaker() as session:
        status = await session.scalar(select(Lead.sync_status).where(Lead.id == ana))
    assert status == "erasing"  # still owed

    # A minute on: the search shows the person, who is deleted; nothing is owed.
    await erased(utcnow() - timedelta(seconds=61))
    _later_by(wall, sandbox_clock, 60)
    await jobs.run(ERASE_TASK, {"account": account, "uid": uid})
    assert [p for p in fake.persons.values() if p["name"].startswith("Ana")] == []
    async with db.sessionmaker() as session:
        status = await session.scalar(select(Lead.sync_status).where(Lead.id == ana))
    assert status == "erased"


async def test_a_create_in_doubt_during_a_redelivery_of_refused_leads_is_asked_for_again(
    db: Database,
    settings_factory: SettingsFactory,
    clients: HttpClients,
    fake: FakePipedrive,
    wall: WallClock,
    sandbox_clock: ManualClock,
) -> None:
    """A refused lead, fixed and replayed (`crm.redelivery` without `waiting`): its create's
    answer is lost. The job succeeds, the lead stays `failed` in doubt, and no job asks
    for it again (the deliver and waiting-redeliver handlers ask, this one ignores
    `report.waiting`): it waits for some other lead's intake to trigger a delivery."""
    fake.lose_create_answers = [503]
    jobs = Jobs(db, settings_factory, _worker(clients, fake, wall))
    ana = await _store(db, email="ana@bodegas.es", first_name="Ana", sync_status="failed")
    await jobs.run(REDELIVER_TASK, {"lead_ids": [ana]})
    crm_id, status, doubt = await _sync_state(db, ana)
    assert crm_id is None
    assert doubt.since is not None
    assert len(fake.persons) == 1  # Pipedrive made the person
    asked = [j for j in jobs.queue.jobs if j.task in (DELIVER_TASK, REDELIVER_TASK)]
    # The job succeeded (nothing failed for good), the lead is still `failed` (a
    # retryable outcome leaves its status), no failed job is left to replay, and no
    # delivery picks up a failed lead: its person is never adopted.
    assert asked, f"lead {status!r}, in doubt, with no job to deliver it"

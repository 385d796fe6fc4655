"""An erasure whose job runs out of postponements is failed on its tombstone, not pending.

A `crm.erase` job waits out a rate limit, an outage or a create that may not show in the
CRM yet by asking to run later (`RetryLater`): a postponement, not counted against its
attempts. Past its task's `max_postponements` the runner takes a further `RetryLater` as
a failure: retried while attempts are left, then the job fails for good (both engines
share the runner: the embedded one reads the postponements at the claim, PostgreSQL's
worker from `job_attempts`). Before this, the handler re-raised every `RetryLater`
untouched, so a job that failed that way left its tombstone `erasing` for good: only the
stale-erasure alert and `cauce leads erasures --retry` saw it. Now the tombstone says
`erase_failed` once the job will not run again, with a reason naming the CRM, what it kept
answering and the postponements and attempts spent (nothing of the person), and stays
`erasing` while the job runs again. On both databases, through the real app.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.app import Resources
from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobStatus
from cauce.leads import tasks
from cauce.leads.models import Lead
from cauce.leads.ports import CrmKey, CrmRejected, CrmThrottled, CrmUnavailable
from cauce.sandbox import SandboxCrmConfig, start_sandbox_crm
from tests.conftest import SettingsFactory
from tests.leads.test_crm_erasure_owed import (
    Crm,
    _drain,
    _erase,
    _found,
    _jobs,
    _owed,
    _served,
    _settings,
    _state,
    _synced_lead,
)


def _policy(monkeypatch: pytest.MonkeyPatch, *, attempts: int, postponements: int) -> None:
    """The erase task's policy, small (read when the app registers its tasks)."""
    monkeypatch.setattr(
        tasks,
        "ERASE_POLICY",
        RetryPolicy(
            max_attempts=attempts,
            base_seconds=0.0,
            cap_seconds=0.0,
            fail_on=(CrmRejected,),
            max_postponements=postponements,
        ),
    )


class WaitingCrm(Crm):
    """A CRM that answers every deletion with a rate limit or an outage due at once (the
    job may run again straight away), `answers` times; it notes the tombstone's state
    each time it is asked (what the attempts before left)."""

    def __init__(self, answer: str, answers: int = 1_000_000) -> None:
        super().__init__()
        self.answer = answer
        self.answers = answers
        self.sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self.seen: list[str] = []

    async def delete(self, key: CrmKey) -> bool:
        if self.sessionmaker is not None:
            async with self.sessionmaker() as session:
                status = await session.scalar(select(Lead.sync_status).where(Lead.uid == key.value))
            if status is not None:
                self.seen.append(status)
        if len(self.seen) <= self.answers:
            if self.answer == "throttled":
                raise CrmThrottled(utcnow(), "TEN_SECONDLY_ROLLING", f"429 for {key.value}")
            if self.answer == "unavailable":
                raise CrmUnavailable(f"HubSpot answered 503 about {key.value}", utcnow())
        return await super().delete(key)


# What the tombstone says once the job gave up: the CRM, what it kept answering, the
# postponements and attempts spent.
GAVE_UP = {
    "throttled": "hubspot kept rate-limiting (HTTP 429): gave up after 3 postponements, 2 attempts",
    "unavailable": "hubspot kept being unavailable (5xx, timeout or open circuit): gave up "
    "after 3 postponements, 2 attempts",
}


@pytest.mark.parametrize("answer", sorted(GAVE_UP))
async def test_an_erasure_out_of_postponements_is_failed_once_no_attempt_is_left(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """3 postponements, then `RetryLater` counts: a retry (attempt 1), then the job fails
    (attempt 2). Pending until that last attempt, failed after it."""
    _policy(monkeypatch, attempts=2, postponements=3)
    crm = WaitingCrm(answer)
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        resources: Resources = app.state.resources
        crm.sessionmaker = resources.db.sessionmaker
        await _erase(api, uid)
        await _drain(app)
        [job] = await _jobs(app)
        assert job.status == JobStatus.FAILED
        # 3 postponed, 1 retried, 1 failed: every one found the erasure still pending.
        assert crm.seen == ["erasing"] * 5
        status, reason = await _state(app, uid)
        assert (status, reason) == ("erase_failed", GAVE_UP[answer])
        assert _found(reason or "") == []
        owed = await _owed(api)
        assert (owed["pending"], owed["failed"]) == (0, 1)
        assert crm.holds_the_person()


async def test_an_erasure_out_of_postponements_with_attempts_left_stays_pending(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postponements used up, but the retry after them finds the CRM back: erased."""
    _policy(monkeypatch, attempts=3, postponements=1)
    crm = WaitingCrm("unavailable", answers=3)  # postponed, retried, retried, then done
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        resources: Resources = app.state.resources
        crm.sessionmaker = resources.db.sessionmaker
        await _erase(api, uid)
        await _drain(app)
        assert crm.seen == ["erasing"] * 4
        assert [job.status for job in await _jobs(app)] == [JobStatus.SUCCEEDED]
        assert await _state(app, uid) == ("erased", None)
        assert not crm.holds_the_person()


async def test_a_postponement_refused_on_the_last_attempt_fails_the_erasure(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create of the lead in doubt may not show in the CRM yet: nothing found is no
    proof, the job asks to run once it would. With no postponement allowed and one
    attempt, that ends the job: the tombstone says why."""
    _policy(monkeypatch, attempts=1, postponements=0)
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        crm.contacts.clear()  # not found, by Cauce's id nor by the CRM's
        await _erase(api, uid)
        resources: Resources = app.state.resources
        async with unit_of_work(resources.db.sessionmaker) as session:
            await session.execute(
                update(Lead).where(Lead.uid == uid).values(crm_create_doubt_at=utcnow())
            )
        await _drain(app)
        assert [job.status for job in await _jobs(app)] == [JobStatus.FAILED]
        assert await _state(app, uid) == (
            "erase_failed",
            "hubspot: a create of the lead may not show in the CRM yet: gave up after "
            "0 postponements, 1 attempt",
        )


async def test_a_gdpr_deletion_in_the_crm_out_of_postponements_owes_nothing(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check after the CRM deleted the contact itself (`crm_gone`) owes nothing when
    it gives up either."""
    _policy(monkeypatch, attempts=1, postponements=0)
    crm = WaitingCrm("unavailable")
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        resources: Resources = app.state.resources
        async with unit_of_work(resources.db.sessionmaker) as session:
            await session.execute(
                update(Lead)
                .where(Lead.uid == uid)
                .values(sync_status="erased", erased_at=utcnow(), crm_id=None)
            )
            await tasks.request_erasure(
                session, resources.jobs, resources.settings, uid, crm_gone=True
            )
        await _drain(app)
        assert [job.status for job in await _jobs(app)] == [JobStatus.FAILED]
        assert await _state(app, uid) == ("erased", None)


SANDBOX_GAVE_UP = {
    "outage": "hubspot kept being unavailable (5xx, timeout or open circuit): gave up "
    "after 0 postponements, 1 attempt",
    "rate_limit": "hubspot kept rate-limiting (HTTP 429): gave up after 0 postponements, 1 attempt",
}


@pytest.mark.parametrize("fault", sorted(SANDBOX_GAVE_UP))
async def test_the_sandbox_hubspot_out_of_postponements_fails_the_erasure(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The real HubSpot adapter against the sandbox in an outage (503 to every request)
    or over its rate limit (429): the one attempt allowed, with no postponement, fails the
    erasure with what the CRM kept answering."""
    _policy(monkeypatch, attempts=1, postponements=0)
    config: dict[str, Any] = {}
    if fault == "rate_limit":
        config = {"rate_limit": 20, "rate_window_seconds": 3600.0}
    sandbox = await start_sandbox_crm(SandboxCrmConfig(seed=1, **config))
    try:
        settings = _settings(
            settings_factory,
            provider="hubspot",
            token=sandbox.token,
            base_url=sandbox.url,
            allow_hosts=("127.0.0.1",),
        )
        async with _served(settings) as (app, api):
            uid = await _synced_lead(app, api)
            if fault == "outage":
                async with httpx.AsyncClient() as client:
                    reply = await client.post(
                        f"{sandbox.url}/_sandbox/faults", json={"outage": 3600}
                    )
                    reply.raise_for_status()
            else:
                async with httpx.AsyncClient(
                    headers={"Authorization": f"Bearer {sandbox.token}"}
                ) as client:
                    contacts = f"{sandbox.url}/crm/v3/objects/contacts"
                    answers = [(await client.get(contacts)).status_code for _ in range(25)]
                    assert answers[-1] == 429
            await _erase(api, uid)
            await _drain(app)
            assert [job.status for job in await _jobs(app)] == [JobStatus.FAILED]
            assert await _state(app, uid) == ("erase_failed", SANDBOX_GAVE_UP[fault])
    finally:
        await sandbox.stop()

"""An erasure the CRM has not done yet stays on record, until it is done.

`DELETE /v1/leads/{id}` clears the lead at once and leaves the CRM's contact to a
`crm.erase` job. The tombstone says where that stands (`sync_status`): `erasing` while
the job is queued or retrying, `erased` once the CRM has no such contact (a 404 counts),
`erase_failed` when the CRM refused for good (a revoked token, a missing scope,
HubSpot's 400...), with a reason that quotes nothing the CRM said but its status code and
error category. The failed job is purged after `jobs.retention_failed_days`; the
tombstone is not. `/metrics` counts the erasures owed (`cauce_crm_erasures_owed`), and
`cauce leads erasures` lists them and, with `--retry`, queues them again.

Before this, the tombstone said `erased` from the start: once the failed job was purged,
nothing in Cauce said the person was still in the CRM (helper-147's GDPR audit,
tests/leads/test_erasure_residue_audit.py). On both databases, through the real app.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner, Result

from cauce.app import Resources, create_app, job_worker_for
from cauce.cli import app as cli_app
from cauce.core.config import Settings
from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.http.errors import UpstreamClientError
from cauce.core.http.types import Response
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobFilter, JobStatus, Retention
from cauce.leads import tasks
from cauce.leads.models import Lead
from cauce.leads.ports import CrmKey, CrmRejected, CrmUnavailable
from cauce.leads.webhooks import crm_erasure
from cauce.sandbox import SandboxCrmConfig, start_sandbox_crm
from tests.conftest import TEST_SECRET, SettingsFactory
from tests.leads.test_delivery import MemoryCrm
from tests.test_cli_jobs import restore_logging

__all__ = ["restore_logging"]  # a fixture, used by name

EMAIL = "zxqw.owed@empresa-audit.es"
PERSON = {"email": EMAIL, "first_name": "Zacarías", "last_name": "Quetzal"}
# What identifies the person, in any text Cauce keeps or shows.
NEEDLES = ("zxqw", "quetzal", "zacar", "empresa-audit")
CRM = {"provider": "hubspot", "token": "t"}
SCOPES = ["leads:read", "leads:write", "leads:admin", "jobs:admin"]


def _found(text: str) -> list[str]:
    folded = text.casefold()
    return [needle for needle in NEEDLES if needle in folded]


class Crm(MemoryCrm):
    """The in-memory CRM, whose deletions can be refused (`refusal`) or fail as an outage
    (`down`) until told otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.refusal: Exception | None = None
        self.down = False
        self.down_for = timedelta(hours=1)  # the time an outage postpones the job by
        self.deletes: list[CrmKey] = []

    async def delete(self, key: CrmKey) -> bool:
        self.deletes.append(key)
        if self.down:
            raise CrmUnavailable("HubSpot did not answer", utcnow() + self.down_for)
        if self.refusal is not None:
            raise self.refusal
        return await super().delete(key)

    def holds_the_person(self) -> bool:
        return any(_found(str(properties)) for properties in self.contacts.values())


def _upstream(status: int, body: dict[str, Any]) -> UpstreamClientError:
    return UpstreamClientError("hubspot", Response(status, content=orjson.dumps(body)))


def _refusal(message: str, cause: Exception | None) -> CrmRejected:
    """A `CrmRejected` as an adapter raises it, `from` the HTTP error it read."""
    try:
        raise CrmRejected(message) from cause
    except CrmRejected as exc:
        return exc


# What CRMs answer when they refuse an erasure, and the reason the tombstone keeps: the
# status code and the CRM's error category, never its text (which may quote the contact).
REFUSALS = {
    # A private app without the scope (port_error's words, HubSpot's body).
    "hubspot-403": (
        _refusal(
            "HubSpot refused the credentials (HTTP 403)",
            _upstream(
                403,
                {
                    "status": "error",
                    "message": f"This app hasn't been granted all required scopes ({EMAIL})",
                    "category": "MISSING_SCOPES",
                },
            ),
        ),
        "hubspot refused: HTTP 403 MISSING_SCOPES",
    ),
    # A GDPR delete by a property that is not unique in the portal.
    "hubspot-400": (
        _refusal(
            "HubSpot refused the deletion (HTTP 400)",
            _upstream(
                400,
                {
                    "status": "error",
                    "message": f"cauce_id is not unique; contact {EMAIL} Zacarías Quetzal",
                    "category": "VALIDATION_ERROR",
                },
            ),
        ),
        "hubspot refused: HTTP 400 VALIDATION_ERROR",
    ),
    # Pipedrive's message carries the body's `error` text; a category made of the
    # person's data is no category.
    "pipedrive-400": (
        _refusal(
            f"Pipedrive refused (HTTP 400): the email {EMAIL} belongs to Zacarías Quetzal",
            _upstream(400, {"success": False, "error": f"{EMAIL}", "category": EMAIL}),
        ),
        "hubspot refused: HTTP 400",
    ),
    # No HTTP error behind it: only the status its message names.
    "bare": (_refusal(f"refused (HTTP 422) for {EMAIL}", None), "hubspot refused: HTTP 422"),
}


# --- the app ----------------------------------------------------------------------------


@asynccontextmanager
async def _served(
    settings: Settings, crm: Crm | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app on `settings` (its CRM `crm`, else the one its settings name; jobs run by
    hand) and a client with every leads scope and jobs:admin."""
    app = create_app(settings, crm=crm)
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        key = await resources.api_keys.create("owed", SCOPES)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://cauce.test",
            headers={"Authorization": f"Bearer {key.token}"},
        ) as api:
            yield app, api


def _settings(settings_factory: SettingsFactory, **crm: Any) -> Settings:
    return settings_factory(crm=crm or CRM, jobs={"embedded_worker": False})


async def _drain(app: FastAPI) -> None:
    await job_worker_for(app.state.resources).run_until_idle(60)


async def _synced_lead(app: FastAPI, api: httpx.AsyncClient) -> str:
    created = await api.post("/v1/leads", json=PERSON)
    assert created.status_code == 201, created.text
    await _drain(app)
    uid = str(created.json()["id"])
    assert (await api.get(f"/v1/leads/{uid}")).json()["sync"]["status"] == "synced"
    return uid


async def _erase(api: httpx.AsyncClient, uid: str) -> None:
    assert (await api.delete(f"/v1/leads/{uid}")).status_code == 204


async def _tombstone(app: FastAPI, uid: str) -> Lead:
    resources: Resources = app.state.resources
    async with resources.db.sessionmaker() as session:
        lead = await session.scalar(select(Lead).where(Lead.uid == uid))
        assert lead is not None
        assert lead.erased_at is not None
        return lead


async def _state(app: FastAPI, uid: str) -> tuple[str, str | None]:
    lead = await _tombstone(app, uid)
    return lead.sync_status, lead.last_sync_error


async def _owed(api: httpx.AsyncClient) -> dict[str, float]:
    """`cauce_crm_erasures_owed{state}` and the oldest pending one's age, as scraped."""
    text = (await api.get("/metrics")).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'cauce_crm_erasures_owed\{state="(\w+)"\} (\S+)', line)
        if m:
            found[m.group(1)] = float(m.group(2))
        m = re.match(r"cauce_crm_erasures_oldest_pending_seconds (\S+)", line)
        if m:
            found["oldest"] = float(m.group(1))
    return found


async def _jobs(app: FastAPI, status: JobStatus | None = None) -> list[Any]:
    resources: Resources = app.state.resources
    return await resources.jobs.list(JobFilter(status=status, task="crm.erase"))


async def _purge_finished_jobs(app: FastAPI, api: httpx.AsyncClient) -> None:
    """What the periodic purge does once `jobs.retention_failed_days` has passed (a later
    job first: SQLite's purge never deletes the newest)."""
    assert (await api.post("/v1/leads", json={"email": "otra@ejemplo.es"})).status_code == 201
    await _drain(app)
    resources: Resources = app.state.resources
    past = timedelta(milliseconds=1)
    await resources.jobs.purge(Retention(succeeded=past, failed=past))
    assert await _jobs(app) == []


# --- the states -------------------------------------------------------------------------


async def test_an_erasure_is_owed_until_the_crm_job_deletes_the_contact(
    settings_factory: SettingsFactory,
) -> None:
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        assert await _owed(api) == {"pending": 0, "failed": 0, "oldest": 0}
        await _erase(api, uid)
        assert (await api.get(f"/v1/leads/{uid}")).status_code == 410
        assert await _state(app, uid) == ("erasing", None)
        owed = await _owed(api)
        assert (owed["pending"], owed["failed"]) == (1, 0)
        assert 0 <= owed["oldest"] < 60

        await _drain(app)
        assert not crm.holds_the_person()
        assert await _state(app, uid) == ("erased", None)
        assert await _owed(api) == {"pending": 0, "failed": 0, "oldest": 0}


async def test_a_contact_the_crm_no_longer_has_is_erased(
    settings_factory: SettingsFactory,
) -> None:
    """A 404 (deleted in the CRM meanwhile, never created) is nothing left to erase."""
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        await _erase(api, uid)
        crm.contacts.clear()
        await _drain(app)
        assert crm.deletes  # asked, and told there is no such contact
        assert await _state(app, uid) == ("erased", None)


async def test_an_erasure_waiting_out_a_crm_outage_stays_pending(
    settings_factory: SettingsFactory,
) -> None:
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        crm.down = True
        await _erase(api, uid)
        await _drain(app)  # postponed an hour: nothing due
        assert [job.status for job in await _jobs(app)] == [JobStatus.TODO]
        assert await _state(app, uid) == ("erasing", None)
        assert (await _owed(api))["pending"] == 1


async def test_without_a_crm_an_erasure_owes_nothing(settings_factory: SettingsFactory) -> None:
    crm = Crm()
    settings = settings_factory(jobs={"embedded_worker": False})
    async with _served(settings, crm) as (app, api):
        uid = str((await api.post("/v1/leads", json=PERSON)).json()["id"])
        await _erase(api, uid)
        assert await _state(app, uid) == ("erased", None)
        assert await _jobs(app) == []


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_refused_erasure_is_failed_with_a_safe_reason_after_the_job_purge(
    settings_factory: SettingsFactory, case: str
) -> None:
    refusal, reason = REFUSALS[case]
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        crm.refusal = refusal
        await _erase(api, uid)
        await _drain(app)
        [job] = await _jobs(app)
        assert job.status == JobStatus.FAILED  # at the first refusal: no retry helps
        assert await _state(app, uid) == ("erase_failed", reason)
        assert (await _owed(api))["failed"] == 1

        await _purge_finished_jobs(app, api)

        assert crm.holds_the_person()
        assert await _state(app, uid) == ("erase_failed", reason)
        owed = await _owed(api)
        assert (owed["pending"], owed["failed"]) == (0, 1)


async def test_the_sandbox_hubspots_refusal_is_kept_by_status_and_category(
    settings_factory: SettingsFactory,
) -> None:
    """The real HubSpot adapter against the sandbox, whose `cauce_id` is not a unique
    property: its GDPR delete by it is a 400 VALIDATION_ERROR (helper-147's probe)."""
    sandbox = await start_sandbox_crm(
        SandboxCrmConfig(
            unique_properties=("cauce_ref",),
            extra_properties=("cauce_id", "cauce_score", "cauce_owner"),
            seed=1,
        )
    )
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
            await _erase(api, uid)
            await _drain(app)
            assert await _state(app, uid) == (
                "erase_failed",
                "hubspot refused: HTTP 400 VALIDATION_ERROR",
            )
    finally:
        await sandbox.stop()


async def test_an_erasure_that_used_up_its_attempts_is_failed(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a refusal, but an error every attempt met until none was left."""
    monkeypatch.setattr(
        tasks,
        "ERASE_POLICY",
        RetryPolicy(max_attempts=2, base_seconds=0.0, cap_seconds=0.0, fail_on=(CrmRejected,)),
    )
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        crm.refusal = RuntimeError(f"unexpected answer about {EMAIL}")
        await _erase(api, uid)
        await _drain(app)
        assert len(crm.deletes) == 2
        assert await _state(app, uid) == ("erase_failed", "hubspot: RuntimeError, 2 attempts")


async def test_a_gdpr_deletion_in_the_crm_owes_nothing(settings_factory: SettingsFactory) -> None:
    """Erased because the CRM deleted the contact itself (`contact.privacyDeletion`): the
    job that follows is a check, and its failure owes the CRM nothing."""
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        crm.contacts.clear()  # HubSpot deleted it, then told Cauce
        crm.refusal = REFUSALS["hubspot-403"][0]
        resources: Resources = app.state.resources
        erase = crm_erasure(resources.settings, resources.db.sessionmaker, resources.jobs)
        async with unit_of_work(resources.db.sessionmaker) as session:
            await erase(session, uid)
        assert await _state(app, uid) == ("erased", None)
        await _drain(app)
        assert [job.status for job in await _jobs(app)] == [JobStatus.FAILED]
        assert await _state(app, uid) == ("erased", None)
        assert (await _owed(api))["failed"] == 0


async def test_a_lead_the_crm_took_again_after_its_erasure_is_owed_again(
    settings_factory: SettingsFactory,
) -> None:
    """A delivery that sent an erased lead (read before its erasure) queues its erasure
    again (`erase_again`): owed again until that job is done, failed if refused."""
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        await _erase(api, uid)
        await _drain(app)
        assert await _state(app, uid) == ("erased", None)
        resources: Resources = app.state.resources
        lead = await _tombstone(app, uid)
        async with unit_of_work(resources.db.sessionmaker) as session:
            await tasks.erase_again(session, resources.jobs, resources.settings, [lead.id])
        assert await _state(app, uid) == ("erasing", None)
        crm.refusal = REFUSALS["hubspot-400"][0]
        await _drain(app)
        assert await _state(app, uid) == ("erase_failed", REFUSALS["hubspot-400"][1])


async def test_a_replayed_erasure_of_an_older_tombstone_records_its_outcome(
    settings_factory: SettingsFactory,
) -> None:
    """A tombstone from before this change says `erased` whatever happened: a failed job
    of it replayed (`cauce jobs retry`) that fails again says so; one that succeeds
    leaves it `erased`."""
    crm = Crm()
    async with _served(_settings(settings_factory), crm) as (app, api):
        uid = await _synced_lead(app, api)
        crm.refusal = REFUSALS["hubspot-403"][0]
        await _erase(api, uid)
        resources: Resources = app.state.resources
        async with unit_of_work(resources.db.sessionmaker) as session:
            lead = await session.scalar(select(Lead).where(Lead.uid == uid))
            assert lead is not None
            lead.sync_status = "erased"  # as an older release left it
        await _drain(app)
        assert await _state(app, uid) == ("erase_failed", REFUSALS["hubspot-403"][1])
        crm.refusal = None
        [job] = await _jobs(app, JobStatus.FAILED)
        await resources.jobs.retry(job.id)
        await _drain(app)
        assert await _state(app, uid) == ("erased", None)
        assert not crm.holds_the_person()


# --- `cauce leads erasures` -------------------------------------------------------------


def _cauce(settings: Settings, *args: str, crm: bool = True) -> Result:
    """`cauce ARGS` in-process on `settings`' database and data dir."""
    env = {
        "CAUCE_ENV": "test",
        "CAUCE_SECRET_KEY": TEST_SECRET,
        "CAUCE_DATA_DIR": str(settings.data_dir),
        "CAUCE_DATABASE_URL": settings.effective_database_url,
        "CAUCE_LOG__FORMAT": "json",
        "CAUCE_LOG__LEVEL": "warning",
        "CAUCE_CRM__PROVIDER": "hubspot" if crm else "none",
        "CAUCE_CRM__TOKEN": "t",
    }
    return CliRunner().invoke(cli_app, list(args), env=env)


Step = Callable[[FastAPI, httpx.AsyncClient], Awaitable[Any]]


def _with_app(settings: Settings, crm: Crm, step: Step) -> Any:
    """Run `step` on the app started on `settings` (stopped after, for the CLI's turn)."""

    async def go() -> Any:
        async with _served(settings, crm) as (app, api):
            return await step(app, api)

    return asyncio.run(go())


def _lines(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()


def test_erasures_are_listed_and_retried_once_the_crm_takes_them(
    settings_factory: SettingsFactory, restore_logging: None
) -> None:
    """A refused erasure, its job purged, is listed (the lead's id, since when, the
    reason: nothing of the person) and queued again by `--retry` once the token is fixed;
    the next run of the jobs erases the contact."""
    settings = _settings(settings_factory)
    crm = Crm()
    crm.down_for = timedelta(seconds=1)
    reason = REFUSALS["hubspot-403"][1]

    async def refused(app: FastAPI, api: httpx.AsyncClient) -> tuple[str, str]:
        done = await _synced_lead(app, api)
        waiting = str((await api.post("/v1/leads", json={"email": "b@ejemplo.es"})).json()["id"])
        await _drain(app)
        crm.refusal = REFUSALS["hubspot-403"][0]
        await _erase(api, done)
        await _drain(app)
        await _purge_finished_jobs(app, api)
        crm.down = True
        await _erase(api, waiting)  # its job postponed: pending, not retried
        await _drain(app)
        return done, waiting

    failed, pending = _with_app(settings, crm, refused)
    listed = _cauce(settings, "leads", "erasures")
    lines = _lines(listed)
    assert _found(listed.stdout) == []
    assert lines[0] == "2 CRM erasures owed: 1 pending, 1 failed"
    by_lead = {line.split()[0]: line for line in lines[1:-1]}
    assert set(by_lead) == {failed, pending}
    assert reason in by_lead[failed]
    assert " failed " in by_lead[failed]
    assert " pending " in by_lead[pending]
    assert "job queued" in by_lead[pending]
    assert "`cauce leads erasures --retry`" in lines[-1]

    crm.refusal, crm.down = None, False  # the token fixed, the CRM back
    retried = _cauce(settings, "leads", "erasures", "--retry")
    assert "queued 1 CRM erasure again" in retried.stdout, retried.output
    assert _found(retried.stdout) == []

    async def after(app: FastAPI, api: httpx.AsyncClient) -> tuple[Any, ...]:
        states = (await _state(app, failed), await _state(app, pending))
        todo = [job.payload["uid"] for job in await _jobs(app, JobStatus.TODO)]
        await asyncio.sleep(1.1)  # past the time the outage postponed the pending one to
        await _drain(app)
        return states, sorted(todo), await _state(app, failed), await _state(app, pending)

    states, todo, done, also_done = _with_app(settings, crm, after)
    assert [status for status, _ in states] == ["erasing", "erasing"]
    assert todo == sorted([failed, pending])  # the pending one's own job, not a second
    assert (done, also_done) == (("erased", None), ("erased", None))
    assert not crm.holds_the_person()
    assert _lines(_cauce(settings, "leads", "erasures")) == ["no CRM erasure is owed"]


def test_retry_queues_a_pending_erasure_whose_job_is_gone(
    settings_factory: SettingsFactory, restore_logging: None
) -> None:
    """An erasure still `erasing` with no job waiting or running for it (an operator
    cancelled it, its failure was not noted on it) is queued again too."""
    settings = _settings(settings_factory)
    crm = Crm()

    async def cancelled(app: FastAPI, api: httpx.AsyncClient) -> str:
        uid = await _synced_lead(app, api)
        await _erase(api, uid)
        [job] = await _jobs(app, JobStatus.TODO)
        await app.state.resources.jobs.cancel(job.id)
        return uid

    uid = _with_app(settings, crm, cancelled)
    lines = _lines(_cauce(settings, "leads", "erasures"))
    assert lines[0] == "1 CRM erasure owed: 1 pending, 0 failed"
    assert "no job queued" in lines[1]
    assert "queued 1 CRM erasure again" in _cauce(settings, "leads", "erasures", "--retry").stdout

    async def run(app: FastAPI, api: httpx.AsyncClient) -> tuple[str, str | None]:
        await _drain(app)
        return await _state(app, uid)

    assert _with_app(settings, crm, run) == ("erased", None)
    assert not crm.holds_the_person()


def test_retry_without_a_crm_is_refused(
    settings_factory: SettingsFactory, restore_logging: None
) -> None:
    settings = _settings(settings_factory)
    crm = Crm()

    async def refused(app: FastAPI, api: httpx.AsyncClient) -> None:
        uid = await _synced_lead(app, api)
        crm.refusal = REFUSALS["hubspot-400"][0]
        await _erase(api, uid)
        await _drain(app)

    _with_app(settings, crm, refused)
    result = _cauce(settings, "leads", "erasures", "--retry", crm=False)
    assert result.exit_code == 1
    assert "no CRM is configured" in result.output

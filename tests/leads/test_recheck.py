"""`cauce leads recheck`: leads stored before intake read values that stand for none as
absent (`N/A`, `-`, `test@test.com`) and refused emails no one can have (`gmail.con`)
are read again under today's rules, on SQLite and PostgreSQL.

Old values are written straight into the rows (today's API would not store them): the
lead is created through the API, then its columns and match keys are set as the intake
of the time left them.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import select, update
from typer.testing import CliRunner, Result

from cauce.cli import app as cli_app
from cauce.cli_leads import _progress
from cauce.core.config import Settings
from cauce.core.db import create_database, unit_of_work
from cauce.core.jobs.ports import JobFilter, JobStatus
from cauce.leads import recheck as rechecking
from cauce.leads import repository as repo
from cauce.leads.delivery import DELIVER_TASK
from cauce.leads.matching import blocking_keys
from cauce.leads.models import Lead, LeadEvent, LeadMatchKey
from cauce.leads.recheck import Action
from tests.conftest import TEST_SECRET, SettingsFactory
from tests.leads.api_client import post_lead, serve_app
from tests.test_cli_jobs import restore_logging

__all__ = ["restore_logging"]  # a fixture, used by name

CRM = {"provider": "hubspot", "token": "t"}
# Ana López, stored when `N/A` was a company and `sincorreo@gmail.com` an email.
ANA_OLD = {
    "company": "N/A",
    "job_title": "-",
    "city": "N/A",
    "region": "Sin región",
    "email": "sincorreo@gmail.com",
}


@pytest.fixture
def settings(settings_factory: SettingsFactory) -> Settings:
    """HubSpot configured (an in-memory port in the app) and no background worker: jobs
    stay where the commands left them."""
    return settings_factory(crm=CRM, jobs={"embedded_worker": False})


def _cauce(settings: Settings, *args: str) -> Result:
    """`cauce ARGS` in-process on `settings`' database and data dir."""
    env = {
        "CAUCE_ENV": "test",
        "CAUCE_SECRET_KEY": TEST_SECRET,
        "CAUCE_DATA_DIR": str(settings.data_dir),
        "CAUCE_DATABASE_URL": settings.effective_database_url,
        "CAUCE_LOG__FORMAT": "json",
        "CAUCE_LOG__LEVEL": "warning",
        "CAUCE_CRM__PROVIDER": "hubspot",
        "CAUCE_CRM__TOKEN": "t",
    }
    return CliRunner().invoke(cli_app, list(args), env=env)


async def _create(settings: Settings, leads: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Post `leads` (name -> lead) through the API; their ids by name. The delivery jobs
    their intake asked for are cancelled, so a later one is the recheck's."""
    async with serve_app(settings) as (app, api):
        uids = {name: str((await post_lead(api, lead))["id"]) for name, lead in leads.items()}
        queue = app.state.resources.jobs
        for job in await queue.list(JobFilter(status=JobStatus.TODO, task=DELIVER_TASK)):
            await queue.cancel(job.id)
    return uids


async def _store_old(settings: Settings, uid: str, **columns: Any) -> None:
    """Set the lead's columns as an older intake stored them (no validation), synced, with
    the match keys those values gave it; its score stays the one it had (a company
    scored as given)."""
    if "email" in columns:
        columns["email_key"] = columns["email"]
    db = create_database(settings)
    try:
        async with unit_of_work(db.sessionmaker) as session:
            await session.execute(
                update(Lead)
                .where(Lead.uid == uid)
                .values(**columns, sync_status="synced", synced_version=Lead.version)
            )
            lead = (await session.scalars(select(Lead).where(Lead.uid == uid))).one()
            await repo.replace_match_keys(session, lead.id, blocking_keys(repo.match_record(lead)))
    finally:
        await db.dispose()


async def _snapshot(settings: Settings) -> tuple[list[Any], list[Any], list[Any]]:
    """Every lead row, match key and history line."""
    db = create_database(settings)
    try:
        async with db.sessionmaker() as session:
            leads = (await session.execute(select(Lead.__table__).order_by(Lead.id))).all()
            keys = (
                await session.execute(
                    select(LeadMatchKey.lead_id, LeadMatchKey.key).order_by(
                        LeadMatchKey.lead_id, LeadMatchKey.key
                    )
                )
            ).all()
            history = (
                await session.execute(select(LeadEvent.__table__).order_by(LeadEvent.id))
            ).all()
        return [tuple(r) for r in leads], [tuple(r) for r in keys], [tuple(r) for r in history]
    finally:
        await db.dispose()


async def _lead(settings: Settings, uid: str) -> tuple[Lead, list[str], list[LeadEvent]]:
    """The stored lead, its match keys and its history lines."""
    db = create_database(settings)
    try:
        async with db.sessionmaker() as session:
            lead = (await session.scalars(select(Lead).where(Lead.uid == uid))).one()
            keys = await session.scalars(
                select(LeadMatchKey.key).where(LeadMatchKey.lead_id == lead.id)
            )
            events = await session.scalars(
                select(LeadEvent).where(LeadEvent.lead_id == lead.id).order_by(LeadEvent.id)
            )
            return lead, sorted(keys), list(events)
    finally:
        await db.dispose()


async def _waiting_deliveries(settings: Settings) -> int:
    async with serve_app(settings) as (app, _api):
        queue = app.state.resources.jobs
        return len(await queue.list(JobFilter(status=JobStatus.TODO, task=DELIVER_TASK)))


async def _old_leads(settings: Settings) -> dict[str, str]:
    """Five stored leads: Ana (company, title, places that say none, a stand-in email beside
    her phone), Bea (a stand-in email, her only contact), Carlos (`gmail.con`), Dani
    (`josé@gmail.com`) and Eva (nothing wrong)."""
    uids = await _create(
        settings,
        {
            "ana": {
                "first_name": "Ana",
                "last_name": "López Gil",
                "company": "Acme Ibérica S.L.",
                "email": "ana@acme-iberica.es",
                "phone": "612345001",
                "country": "ES",
            },
            "bea": {"first_name": "Bea", "last_name": "Ruiz", "email": "bea@ruiz-sl.es"},
            "carlos": {"first_name": "Carlos", "email": "carlos@empresa.es"},
            "dani": {"first_name": "Dani", "email": "dani@empresa.es"},
            "eva": {"first_name": "Eva", "company": "Eva S.A.", "email": "eva@eva.es"},
        },
    )
    await _store_old(settings, uids["ana"], **ANA_OLD)
    await _store_old(settings, uids["bea"], email="notiene@gmail.com")
    await _store_old(settings, uids["carlos"], email="carlos@gmail.con")
    await _store_old(settings, uids["dani"], email="josé@gmail.com")
    return uids


def test_a_dry_run_reports_old_values_and_changes_nothing(
    settings: Settings, restore_logging: None
) -> None:
    """Without --apply every finding is counted and listed with its lead, field and reason
    (a refused email with the address meant), and no row changes."""
    uids = asyncio.run(_old_leads(settings))
    before = asyncio.run(_snapshot(settings))
    result = _cauce(settings, "leads", "recheck")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "checked 5 live leads under today's rules: 4 with values to look at" in out
    for field, action, count in [
        ("company", "clear", 1),
        ("job_title", "clear", 1),
        ("city", "clear", 1),
        ("region", "clear", 1),
        ("email", "clear", 1),
        ("email", "keep", 1),
        ("email", "fix", 2),
    ]:
        assert f"  {field:<10} {action:<6} {count}\n" in out
    assert "dry run, nothing changed: --apply clears 5 values" in out
    assert f"lead {uids['ana']}  company    clear: 'N/A' says none" in out
    assert f"lead {uids['ana']}  region     clear: 'Sin región' says none" in out
    assert f"lead {uids['ana']}  email      clear: 'sincorreo@gmail.com' is a stand-in" in out
    assert f"lead {uids['bea']}  email      keep: 'notiene@gmail.com' is a stand-in" in out
    assert "the lead's only contact: kept" in out
    assert f"lead {uids['carlos']}  email      fix: " in out
    assert "(did you mean gmail.com?)" in out
    assert "(did you mean jose@gmail.com?)" in out
    assert uids["eva"] not in out
    assert asyncio.run(_snapshot(settings)) == before

    shown = _cauce(settings, "leads", "recheck", "--show", "2")
    assert shown.exit_code == 0, shown.output
    assert "first 2 of 8 findings:" in shown.stdout
    assert len([line for line in shown.stdout.splitlines() if line.startswith("  lead ")]) == 2


def test_apply_clears_through_the_patch_service(settings: Settings, restore_logging: None) -> None:
    """--apply clears the values that say none and a stand-in email beside a phone, as a
    PATCH would: re-scored without the company, re-keyed, a history line naming the
    fields and the command, pending for the CRM with a delivery waiting; the only-contact
    stand-in and refused emails stay; a second run has nothing to clear."""
    uids = asyncio.run(_old_leads(settings))
    _, keys, _ = asyncio.run(_lead(settings, uids["ana"]))
    assert {"e:sincorreo@gmail.com", "m:sincorreo"} <= set(keys)
    untouched = {name: asyncio.run(_lead(settings, uids[name]))[0] for name in ("bea", "carlos")}

    result = _cauce(settings, "leads", "recheck", "--apply")
    assert result.exit_code == 0, result.output
    assert (
        "cleared 5 values on 1 lead (company 1, job_title 1, city 1, region 1, email 1)"
        in result.stdout
    )

    ana, keys, history = asyncio.run(_lead(settings, uids["ana"]))
    assert (ana.company, ana.job_title, ana.city, ana.region) == (None, None, None, None)
    assert (ana.email, ana.email_key, ana.other_emails) == (None, None, None)
    assert ana.phone == "+34612345001"
    rules = {reason["rule"] for reason in ana.score_reasons}
    assert "has_company" not in rules
    assert "company_email" not in rules
    assert not [key for key in keys if key.startswith(("e:", "m:"))]
    assert not [key for key in keys if key.startswith("c:")]
    last = history[-1]
    assert last.action == "updated"
    assert last.actor == "cauce leads recheck"
    assert set(last.changes["fields"]) == {"email", "company", "job_title", "region", "city"}
    assert ana.sync_status == "pending"
    assert ana.version > ana.synced_version
    assert asyncio.run(_waiting_deliveries(settings)) == 1

    for name, before in untouched.items():
        after = asyncio.run(_lead(settings, uids[name]))[0]
        assert (after.email, after.version, after.sync_status) == (
            before.email,
            before.version,
            "synced",
        )

    again = _cauce(settings, "leads", "recheck", "--apply")
    assert again.exit_code == 0, again.output
    assert "3 with values to look at" in again.stdout
    assert "nothing to clear" in again.stdout
    assert " clear " not in again.stdout
    assert "nothing to clear" in _cauce(settings, "leads", "recheck").stdout


@pytest.mark.parametrize("rechecked", [False, True])
def test_a_cleared_stand_in_email_no_longer_draws_arrivals(
    settings: Settings, restore_logging: None, rechecked: bool
) -> None:
    """A later arrival with Ana's name and a real `sincorreo@` mailbox elsewhere is held
    as her possible duplicate while her stored `sincorreo@gmail.com` shares its mailbox
    name; once the recheck has cleared it, it is a lead of its own."""
    uids = asyncio.run(_old_leads(settings))
    if rechecked:
        assert _cauce(settings, "leads", "recheck", "--apply").exit_code == 0

    async def arrive() -> dict[str, Any]:
        async with serve_app(settings) as (_app, api):
            return await post_lead(
                api, {"first_name": "Ana", "last_name": "López Gil", "email": "sincorreo@lopez.es"}
            )

    answer = asyncio.run(arrive())
    if rechecked:
        assert (answer["outcome"], answer["duplicate"]) == ("created", None)
    else:
        assert answer["outcome"] == "held_for_review"
        assert answer["duplicate"]["lead_id"] == uids["ana"]


def test_leads_that_change_meanwhile_are_skipped(
    settings: Settings, restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead erased, or edited, after the scan read it and before its clear is skipped
    and counted (the edit is kept), and the run goes on to the others."""
    uids = asyncio.run(_old_leads(settings))
    extra = asyncio.run(
        _create(settings, {"fran": {"first_name": "Fran", "email": "fran@fran.es"}})
    )
    asyncio.run(_store_old(settings, extra["fran"], company="N/A"))
    read_page = rechecking._page

    async def racing_page(*args: Any) -> list[Any]:
        rows = await read_page(*args)
        if rows:  # someone erases Ana and edits Fran's company meanwhile
            async with unit_of_work(args[0]) as session:
                await session.execute(
                    update(Lead).where(Lead.uid == uids["ana"]).values(erased_at=Lead.created_at)
                )
                await session.execute(
                    update(Lead)
                    .where(Lead.uid == extra["fran"])
                    .values(company="Fran Hermanos", version=Lead.version + 1)
                )
        return rows

    monkeypatch.setattr(rechecking, "_page", racing_page)
    result = _cauce(settings, "leads", "recheck", "--apply")
    assert result.exit_code == 0, result.output
    assert "cleared 0 values on 0 leads" in result.stdout
    assert "skipped 2 leads that changed meanwhile: run again to check them" in result.stdout
    fran, _, _ = asyncio.run(_lead(settings, extra["fran"]))
    assert fran.company == "Fran Hermanos"
    ana, _, history = asyncio.run(_lead(settings, uids["ana"]))
    assert ana.company == "N/A"
    assert history[-1].actor != "cauce leads recheck"


def test_pages_cover_every_lead_once(
    settings: Settings, restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read two leads a page, the run finds and clears what one page finds, no lead twice."""
    uids = asyncio.run(_old_leads(settings))
    monkeypatch.setattr(rechecking, "PAGE_SIZE", 2)
    result = _cauce(settings, "leads", "recheck", "--apply")
    assert result.exit_code == 0, result.output
    assert "checked 5 live leads under today's rules: 4 with values to look at" in result.stdout
    assert "cleared 5 values on 1 lead (" in result.stdout
    assert result.stdout.count(f"lead {uids['carlos']}  ") == 1


def test_erased_leads_are_not_read(settings: Settings, restore_logging: None) -> None:
    """An erased lead (its tombstone) is no lead to recheck."""
    uids = asyncio.run(_old_leads(settings))

    async def erase() -> None:
        async with serve_app(settings) as (_app, api):
            response = await api.delete(f"/v1/leads/{uids['ana']}")
            assert response.status_code in (200, 204), response.text

    asyncio.run(erase())
    result = _cauce(settings, "leads", "recheck")
    assert result.exit_code == 0, result.output
    assert "checked 4 live leads under today's rules: 3 with values to look at" in result.stdout
    assert uids["ana"] not in result.stdout


def test_a_database_that_cannot_be_reached_is_one_line(
    tmp_path: Path, restore_logging: None
) -> None:
    """A database that does not answer ends the command with one error line, exit 1."""
    env = {
        "CAUCE_DATA_DIR": str(tmp_path / "data"),
        "CAUCE_DATABASE_URL": "postgresql+psycopg://x:y@127.0.0.1:1/cauce",
        "CAUCE_LOG__FORMAT": "json",
    }
    result = CliRunner().invoke(cli_app, ["leads", "recheck"], env=env)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: cannot use the database:")


@pytest.mark.parametrize(
    ("field", "value", "action"),
    [
        ("company", "N/A", Action.CLEAR),
        ("company", "#N/A", Action.CLEAR),
        ("company", "Nil", None),  # a company may be called so
        ("job_title", "No especificado", Action.CLEAR),
        ("city", "NA", None),  # Navarra's code
        ("city", "-", Action.CLEAR),
        ("region", "Sevilla", None),
        ("company", "x" * 199, None),  # past today's limit: a value all the same
    ],
)
def test_text_fields_follow_intake(field: str, value: str, action: Action | None) -> None:
    """A text field is cleared exactly when intake would read it as absent today."""
    row = {"id": 1, "uid": "u", "phone": None, "email": None} | dict.fromkeys(
        rechecking.TEXT_FIELDS
    )
    found = rechecking.check(row | {field: value})
    assert [f.action for f in found] == ([action] if action else [])


@pytest.mark.parametrize(
    ("email", "phone", "action"),
    [
        ("a@a.com", "+34612345678", Action.CLEAR),
        ("info@example.com", None, Action.KEEP),
        ("juan@gamil.com", "+34612345678", Action.FIX),
        ("test@empresa.es", None, None),  # a company's test inbox may be real
        ("ana@empresa.es", None, None),
    ],
)
def test_emails_follow_intake(email: str, phone: str | None, action: Action | None) -> None:
    """A stand-in email is cleared beside a phone and kept alone; one refused today is
    listed to fix; a real one is left."""
    row = {"id": 1, "uid": "u", "phone": phone, "email": email} | dict.fromkeys(
        rechecking.TEXT_FIELDS
    )
    assert [f.action for f in rechecking.check(row)] == ([action] if action else [])


def test_long_runs_without_a_terminal_say_how_far_they_got() -> None:
    """Past one page, a run whose stderr is no terminal prints a count every 10,000 leads;
    a run of one page prints nothing."""
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False)
    with _progress(console, 25_000, 500) as advance:
        for _ in range(50):
            advance(500)
    assert stream.getvalue().splitlines() == [
        "checked 10000 of 25000 leads",
        "checked 20000 of 25000 leads",
    ]
    quiet = io.StringIO()
    with _progress(Console(file=quiet), 400, 500) as advance:
        advance(400)
    assert quiet.getvalue() == ""

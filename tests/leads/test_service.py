"""Lead intake and edits on both databases: create, merge, hold, route, patch, erase, search."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text, update

from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.db.analyze import ANALYZE_TASK
from cauce.leads import bulk, service_edit
from cauce.leads import repository as repo
from cauce.leads import repository_lead as repo_lead
from cauce.leads.errors import LeadErased, LeadInvalid
from cauce.leads.metrics import LeadsMetrics
from cauce.leads.models import Lead, LeadEvent, LeadMatchKey, LeadSource
from cauce.leads.schemas import LeadIn, LeadPatch
from cauce.leads.service import LeadsRuntime, intake, intake_many
from tests.conftest import SettingsFactory


class NoQueue:
    """Stands in for the job queue when no CRM is configured: only an erasure's refresh
    of PostgreSQL's statistics is deferred (`request_analyze`), recorded here."""

    engine = "none"

    def __init__(self) -> None:
        self.deferred: list[str] = []

    async def defer(self, _session: object, task: str, _payload: object, **_: object) -> None:
        self.deferred.append(task)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = create_database(settings)
    yield database
    await database.dispose()


def _runtime(settings: Settings, db: Database) -> LeadsRuntime:
    queue: Any = NoQueue()
    assert isinstance(settings.crm.provider, str)
    return LeadsRuntime(settings=settings, sessionmaker=db.sessionmaker, queue=queue)


async def _accept(rt: LeadsRuntime, **fields: Any) -> Any:
    lead_in = LeadIn.model_validate(fields)
    async with unit_of_work(rt.sessionmaker) as session:
        result = await intake(session, rt, lead_in, actor="test")
        await session.flush()
        return result


async def test_a_new_lead_is_created_scored_and_keyed(settings: Settings, db: Database) -> None:
    """A lead is stored normalised, with a score and reasons, its keys and its arrival."""
    rt = _runtime(settings, db)
    result = await _accept(
        rt,
        email="Ana.Garcia@Construcciones-Nandu.ES",
        phone="612 345 678",
        full_name="Ana García López",
        company="Construcciones Ñandú SL",
        country="ES",
        source="web_form",
    )
    assert result.outcome == "created"
    lead = result.lead
    assert (lead.email, lead.phone) == ("ana.garcia@construcciones-nandu.es", "+34612345678")
    assert (lead.first_name, lead.last_name) == ("Ana", "García López")
    assert lead.score == result.score.value > 0
    assert {r["rule"] for r in lead.score_reasons} >= {"company_email", "web_form"}
    assert lead.sync_status == "pending"
    async with db.sessionmaker() as session:
        keys = (await session.scalars(select(LeadMatchKey.key))).all()
        assert any(k.startswith("e:") for k in keys)
        assert await repo_lead.arrivals(session, lead.id) == 1


async def test_same_email_merges_filling_gaps_and_keeping_sources(
    settings: Settings, db: Database
) -> None:
    """A second arrival with the same email fills empty fields, never overwrites, and counts."""
    rt = _runtime(settings, db)
    first = await _accept(rt, email="luis@empresa.es", first_name="Luis", company="Empresa SA")
    second = await _accept(
        rt,
        email="LUIS@empresa.es",
        first_name="Luisito",
        job_title="Director Comercial",
        source="csv",
    )
    assert second.outcome == "merged"
    assert second.lead.id == first.lead.id
    assert second.duplicate is not None
    assert second.duplicate.match == "email"
    assert "job_title" in second.duplicate.merged_fields
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, first.lead.id)
        assert lead is not None
        assert (lead.first_name, lead.job_title) == ("Luis", "Director Comercial")
        assert lead.version == 2
        assert await session.scalar(select(func.count()).select_from(Lead)) == 1
        sources = (await session.scalars(select(LeadSource.source))).all()
        assert sorted(sources) == ["api", "csv"]
        actions = (await session.scalars(select(LeadEvent.action))).all()
        assert sorted(actions) == ["created", "merged"]
    assert any(r.rule == "returning" for r in second.score.reasons)


async def test_review_policy_holds_a_duplicate_instead_of_merging(
    settings_factory: SettingsFactory, tmp_path: Any
) -> None:
    """With the review policy a duplicate is stored apart, held, pointing at the original."""
    settings = settings_factory(leads={"dedupe": {"on_duplicate": "review"}})
    database = create_database(settings)
    try:
        rt = _runtime(settings, database)
        first = await _accept(rt, email="eva@empresa.es", first_name="Eva")
        second = await _accept(rt, email="eva@empresa.es", first_name="Eva", company="X")
        assert second.outcome == "held_for_review"
        assert second.lead.id != first.lead.id
        assert second.lead.possible_duplicate_of == first.lead.id
        assert second.lead.sync_status == "held"
        assert second.duplicate is not None
        assert second.duplicate.lead_uid == first.lead.uid
    finally:
        await database.dispose()


async def test_routing_assigns_owners_by_rule_and_rotation(
    settings_factory: SettingsFactory,
) -> None:
    """Mexican leads go to the Mexico team, whose members take turns by capacity."""
    settings = settings_factory(
        leads={
            "routing_rules": [{"team": "mexico", "countries": ["MX"]}],
            "teams": {
                "mexico": [{"name": "rosa", "capacity": 2}, {"name": "juan", "capacity": 1}],
                "spain": [{"name": "marta"}],
            },
            "default_team": "spain",
        }
    )
    database = create_database(settings)
    try:
        rt = _runtime(settings, database)
        owners = [
            (await _accept(rt, email=f"c{i}@empresa.mx", country="MX")).lead.owner for i in range(3)
        ]
        assert owners == ["rosa", "juan", "rosa"]
        spanish = await _accept(rt, email="p@empresa.es", country="ES")
        assert (spanish.lead.team, spanish.lead.owner) == ("spain", "marta")
        given = await _accept(rt, email="q@empresa.mx", country="MX", owner="jefe")
        assert given.lead.owner == "jefe"
    finally:
        await database.dispose()


async def test_patch_owner_null_routes_the_lead_again(settings_factory: SettingsFactory) -> None:
    """A lead keeps its team and owner through changes; `"owner": null` asks routing
    again, by the lead as the PATCH leaves it (the team's rotation moves on)."""
    settings = settings_factory(
        leads={
            "routing_rules": [{"team": "mexico", "countries": ["MX"]}],
            "teams": {
                "mexico": [{"name": "rosa", "capacity": 1}, {"name": "juan", "capacity": 1}],
                "spain": [{"name": "marta"}],
            },
            "default_team": "spain",
        }
    )
    database = create_database(settings)

    async def patch(uid: str, changes: dict[str, object]) -> tuple[str | None, str | None]:
        async with unit_of_work(database.sessionmaker) as session:
            lead = await service_edit.patch(
                session, rt, uid, LeadPatch.model_validate(changes), "test"
            )
            return lead.team, lead.owner

    try:
        rt = _runtime(settings, database)
        created = await _accept(rt, email="p@empresa.es", country="ES")
        uid = created.lead.uid
        assert (created.lead.team, created.lead.owner) == ("spain", "marta")
        # Moved to Mexico: still Marta's until asked.
        assert await patch(uid, {"country": "MX"}) == ("spain", "marta")
        assert await patch(uid, {"owner": None}) == ("mexico", "rosa")
        # The rotation moved on: the next Mexican lead is Juan's.
        nxt = await _accept(rt, email="q@empresa.mx", country="MX")
        assert nxt.lead.owner == "juan"
        # Asked again with nothing changed: routed again, the turn after Juan's.
        assert await patch(uid, {"owner": None}) == ("mexico", "rosa")
        async with database.sessionmaker() as session:
            detail = await service_edit.detail(session, uid)
        fields = [event.changes.get("fields") for event in detail.history]
        assert ["team", "owner"] in fields or ["owner", "team"] in fields
    finally:
        await database.dispose()


async def test_patch_changes_fields_rescoring_and_resyncing(
    settings: Settings, db: Database
) -> None:
    """A patch bumps the version, re-scores and records which fields changed."""
    rt = _runtime(settings, db)
    created = await _accept(rt, email="ana@gmail.com")
    async with unit_of_work(db.sessionmaker) as session:
        lead = await service_edit.patch(
            session,
            rt,
            created.lead.uid,
            LeadPatch.model_validate({"email": "ana@empresa.es", "company": "Empresa"}),
            "test",
        )
        assert lead.version == 2
        assert not lead.email_free
        assert lead.score > created.lead.score
    async with unit_of_work(db.sessionmaker) as session:
        with pytest.raises(LeadInvalid):
            await service_edit.patch(
                session,
                rt,
                created.lead.uid,
                LeadPatch.model_validate({"email": None, "phone": None}),
                "test",
            )


async def test_erasure_keeps_a_tombstone_without_personal_data(
    settings: Settings, db: Database
) -> None:
    """Erasure clears personal fields, keys and arrival details; the lead then answers 410."""
    rt = _runtime(settings, db)
    created = await _accept(
        rt, email="borrar@empresa.es", first_name="Borja", utm={"source": "google"}
    )
    await _accept(rt, email="borrar@empresa.es", company="Empresa")
    async with unit_of_work(db.sessionmaker) as session:
        # The CRM's refusal quoting the contact, as HubSpot's CONFLICT does.
        clash = "CONFLICT: A contact with email borrar@empresa.es already exists."
        await session.execute(
            update(Lead).where(Lead.id == created.lead.id).values(last_sync_error=clash)
        )
    async with unit_of_work(db.sessionmaker) as session:
        await service_edit.erase(session, rt, created.lead.uid, "test")
    async with db.sessionmaker() as session:
        lead = await session.get(Lead, created.lead.id)
        assert lead is not None
        assert lead.erased_at is not None
        assert (lead.email, lead.first_name, lead.company) == (None, None, None)
        assert lead.last_sync_error is None
        assert await session.scalar(select(func.count()).select_from(LeadMatchKey)) == 0
        utms = (await session.scalars(select(LeadSource.utm))).all()
        assert all(u == {} for u in utms)
        with pytest.raises(LeadErased):
            await service_edit.detail(session, created.lead.uid)
    # PostgreSQL's statistics hold column values: the erasure has its tables analyzed.
    expected = [ANALYZE_TASK] if db.dialect == "postgresql" else []
    queue: NoQueue = rt.queue  # type: ignore[assignment]  # what _runtime gives
    assert queue.deferred == expected
    again = await _accept(rt, email="borrar@empresa.es")
    assert again.outcome == "created"


async def test_search_filters_and_cursor(settings: Settings, db: Database) -> None:
    """Search filters by fields and free text and pages newest first."""
    rt = _runtime(settings, db)
    for i in range(5):
        await _accept(rt, email=f"p{i}@empresa.es", country="ES" if i % 2 else "MX")
    await _accept(rt, email="otra@ñandú.es", company="Ñandú Software")
    async with db.sessionmaker() as session:
        mexican = await repo_lead.search(
            session, repo_lead.LeadQuery(country="MX"), before_id=None, limit=10
        )
        assert len(mexican) == 3
        page1 = await repo_lead.search(session, repo_lead.LeadQuery(), before_id=None, limit=4)
        page2 = await repo_lead.search(
            session, repo_lead.LeadQuery(), before_id=page1[-1].id, limit=4
        )
        assert len(page1) + len(page2) == 6
        assert not {lead.id for lead in page1} & {lead.id for lead in page2}
        text = await repo_lead.search(
            session, repo_lead.LeadQuery(text="ñandú"), before_id=None, limit=10
        )
        assert [lead.company for lead in text] == ["Ñandú Software"]


async def test_two_processes_taking_in_one_email_at_once_store_one_lead(
    settings: Settings, db: Database
) -> None:
    """Two processes (own engines, own caches) take in one new email at the same time: the
    second waits for the first's transaction, then merges into its lead (on PostgreSQL a
    lock on the exact keys; on SQLite the one writer)."""
    other = create_database(settings)
    try:
        first_rt, second_rt = _runtime(settings, db), _runtime(settings, other)
        fields = {"email": "lucia.fernandez@example.es", "full_name": "Lucía Fernández"}
        async with unit_of_work(first_rt.sessionmaker) as session:
            first = await intake(session, first_rt, LeadIn.model_validate(fields), actor="a")
            await session.flush()
            second_task = asyncio.create_task(_accept(second_rt, **fields, phone="+34 699 111 222"))
            await asyncio.sleep(0.5)  # the second has started while the first is open
            assert not second_task.done()
        second = await asyncio.wait_for(second_task, 10)
        assert (first.outcome, second.outcome) == ("created", "merged")
        assert second.lead.id == first.lead.id
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Lead)) == 1
    finally:
        await other.dispose()


async def test_leads_are_counted_once_their_transaction_commits(
    settings: Settings, db: Database
) -> None:
    """`cauce_leads_intake_total` counts a lead when its transaction commits: one rolled
    back (a group that fails and runs again lead by lead) is not counted."""
    registry = CollectorRegistry()
    rt = replace(_runtime(settings, db), metrics=LeadsMetrics(registry))

    def created() -> float:
        value = registry.get_sample_value("cauce_leads_intake_total", {"outcome": "created"})
        return value or 0.0

    fields = {"email": "marta.ruiz@example.es", "full_name": "Marta Ruiz"}

    async def fail_after_intake() -> None:
        async with unit_of_work(rt.sessionmaker) as session:
            await intake(session, rt, LeadIn.model_validate(fields), actor="t")
            await session.flush()
            assert created() == 0  # not before the commit
            raise RuntimeError("the transaction fails after intake")

    with pytest.raises(RuntimeError, match="fails after intake"):
        await fail_after_intake()
    assert created() == 0
    await _accept(rt, **fields)
    await _accept(rt, **fields)
    assert created() == 1
    assert registry.get_sample_value("cauce_leads_intake_total", {"outcome": "merged"}) == 1


async def test_a_patch_and_an_intake_of_its_new_email_do_not_deadlock(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PATCH giving lead A a new email while a lead with that email and A's phone
    arrives: the PATCH takes the email's intake lock before A's row, as intake does, so
    the intake waits, then merges into A (before, each held what the other wanted)."""
    other = create_database(settings)
    try:
        rt, intake_rt = _runtime(settings, db), _runtime(settings, other)
        first = await _accept(rt, email="ana@empresa.es", phone="612345678", full_name="Ana Ruiz")
        has_row = asyncio.Event()
        real_live_lead = service_edit.live_lead

        async def live_lead_then_wait(session: Any, uid: str, **kw: Any) -> Lead:
            lead = await real_live_lead(session, uid, **kw)
            if kw.get("for_update"):
                has_row.set()
                await asyncio.sleep(0.5)  # the intake starts while the row is held
            return lead

        monkeypatch.setattr(service_edit, "live_lead", live_lead_then_wait)

        async def patch() -> Lead:
            async with unit_of_work(rt.sessionmaker) as session:
                changes = LeadPatch.model_validate({"email": "ana.ruiz@empresa.es"})
                return await service_edit.patch(session, rt, first.lead.uid, changes, "t")

        async def arrive() -> Any:
            await has_row.wait()
            return await _accept(
                intake_rt, email="ana.ruiz@empresa.es", phone="612345678", full_name="Ana Ruiz"
            )

        patched, arrived = await asyncio.wait_for(asyncio.gather(patch(), arrive()), 30)
        assert patched.email == "ana.ruiz@empresa.es"
        assert (arrived.outcome, arrived.lead.id) == ("merged", first.lead.id)
    finally:
        await other.dispose()


async def _advisory_locks(session: Any) -> int:
    held = await session.execute(
        text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
    )
    return int(held.scalar_one())


async def _key_lock_rows(session: Any) -> int:
    held = await session.execute(text("SELECT count(*) FROM lead_key_locks"))
    return int(held.scalar_one())


async def _wait_until_blocked(session: Any, task: asyncio.Task[Any]) -> None:
    """Until another session of this database waits for a lock (PostgreSQL), while
    `task` has not ended: the intake it runs is blocked, not merely slow to start."""
    blocked = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    for _ in range(200):
        assert not task.done()
        if (await session.execute(blocked)).scalar_one():
            return
        # pg_stat_activity is read once per transaction (stats_fetch_consistency =
        # cache): end it, or a read before the intake started is all it ever shows.
        await session.rollback()
        await asyncio.sleep(0.05)
    raise AssertionError("no session waited for a lock within 10 s")


async def test_intakes_lock_their_exact_keys_with_rows_deleted_at_once(
    settings: Settings, db: Database, backend: str
) -> None:
    """On PostgreSQL an intake locks each exact key with a row of `lead_key_locks`, not a
    slot of the server's shared lock table, and deletes the row at once: another intake
    inserting the key still waits until the first one ends. So a batch of any size (here
    600 keys) sharing no key with an intake in flight runs beside it; one sharing a key
    waits for it, then merges into its lead."""
    if backend != "postgresql":
        pytest.skip("key locks are PostgreSQL's (SQLite has one writer)")
    rt = _runtime(settings, db)
    small = [LeadIn.model_validate({"email": f"s{i}@empresa.es"}) for i in range(5)]
    big = [
        LeadIn.model_validate({"email": f"b{i}@empresa.es", "phone": f"+3461{i:07d}"})
        for i in range(300)
    ]
    other = create_database(settings)
    try:
        other_rt = _runtime(settings, other)

        async def other_intake(items: list[LeadIn]) -> list[Any]:
            async with unit_of_work(other_rt.sessionmaker) as other_session:
                return await intake_many(other_session, other_rt, items, actor="t")

        async with unit_of_work(rt.sessionmaker) as session:
            first = await intake_many(session, rt, small, actor="t")
            assert await _advisory_locks(session) == 0
            assert await _key_lock_rows(session) == 0  # inserted, then deleted at once
            beside = await asyncio.wait_for(other_intake(big), 30)  # waits for nothing
            assert {r.outcome for r in beside} == {"created"}
            again = LeadIn.model_validate({"email": "s3@empresa.es", "full_name": "Ana Ruiz"})
            sharing = asyncio.create_task(other_intake([again]))
            async with db.sessionmaker() as watch:  # s3's lock is held until this commits
                await _wait_until_blocked(watch, sharing)
            assert not sharing.done()
        [merged] = await asyncio.wait_for(sharing, 30)
        assert (merged.outcome, merged.lead.id) == ("merged", first[3].lead.id)
        async with db.sessionmaker() as read:
            assert await _key_lock_rows(read) == 0
    finally:
        await other.dispose()


async def test_an_intake_rolled_back_frees_its_keys_at_once(
    settings: Settings, db: Database, backend: str
) -> None:
    """An intake of the same email waits for one in flight; when that one fails and
    rolls back, the waiting one goes on at once and creates the lead (the failed one's
    lock went with its rollback)."""
    if backend != "postgresql":
        pytest.skip("key locks are PostgreSQL's (SQLite has one writer)")
    rt = _runtime(settings, db)
    other = create_database(settings)
    try:
        other_rt = _runtime(settings, other)

        async def locked_then_failed() -> None:
            async with unit_of_work(rt.sessionmaker) as session:
                await intake(session, rt, LeadIn.model_validate({"email": "ana@empresa.es"}))
                waiting = asyncio.create_task(_accept(other_rt, email="ana@empresa.es"))
                async with db.sessionmaker() as watch:
                    await _wait_until_blocked(watch, waiting)
                raise _Failed(waiting)

        with pytest.raises(_Failed) as failed:
            await locked_then_failed()
        result = await asyncio.wait_for(failed.value.waiting, 10)
        assert result.outcome == "created"
    finally:
        await other.dispose()


class _Failed(Exception):
    """An intake failed on purpose, with the task of the intake that waited for it."""

    def __init__(self, waiting: asyncio.Task[Any]) -> None:
        super().__init__("after the locks")
        self.waiting = waiting


async def test_intakes_side_by_side_advance_team_rotations_in_one_order(
    settings_factory: SettingsFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches sharing no key run side by side on PostgreSQL; one routes to Mexico
    first, the other to Spain first. Each locks the teams' rotation rows in team order,
    so neither waits for the other in a circle (in item order, PostgreSQL ended one as a
    deadlock's victim)."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time")
    settings = settings_factory(
        leads={
            "routing_rules": [{"team": "mexico", "countries": ["MX"]}],
            "teams": {"mexico": [{"name": "rosa"}], "spain": [{"name": "marta"}]},
            "default_team": "spain",
        }
    )
    real_advance = repo.advance_route

    async def advance_slowly(session: Any, team: str, steps: int) -> int:
        position = await real_advance(session, team, steps)
        await asyncio.sleep(0.3)  # the other batch takes its first team meanwhile
        return position

    monkeypatch.setattr(repo, "advance_route", advance_slowly)

    def batch(prefix: str, countries: list[str]) -> list[LeadIn]:
        return [
            LeadIn.model_validate({"email": f"{prefix}{i}@empresa.es", "country": country})
            for i, country in enumerate(countries)
        ]

    async def take(items: list[LeadIn]) -> list[str | None]:
        db = create_database(settings)
        try:
            rt = _runtime(settings, db)
            async with unit_of_work(rt.sessionmaker) as session:
                results = await intake_many(session, rt, items, actor="t")
            return [result.lead.owner for result in results]
        finally:
            await db.dispose()

    owners = await asyncio.wait_for(
        asyncio.gather(take(batch("a", ["MX", "ES"])), take(batch("b", ["ES", "MX"]))), 30
    )
    assert list(owners) == [["rosa", "marta"], ["marta", "rosa"]]


async def test_a_rotation_is_not_held_through_an_intakes_writes(
    settings_factory: SettingsFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL an intake gives owners from its teams' rotations as read, and only
    advances them after its writes: another intake routing to the same team meanwhile
    does not wait for those writes. When the other one took the turn first, the owners
    are mended, so each turn still goes to one lead (the rotation stays fair)."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time")
    settings = settings_factory(
        leads={"teams": {"spain": [{"name": "marta"}, {"name": "pablo"}]}, "default_team": "spain"}
    )
    writing, written = asyncio.Event(), asyncio.Event()
    real_insert = bulk.insert_sources

    async def insert_then_wait(session: Any, rows: Any) -> None:
        await real_insert(session, rows)
        if not writing.is_set():  # the first intake only
            writing.set()
            await written.wait()

    monkeypatch.setattr(bulk, "insert_sources", insert_then_wait)
    first_db, second_db = create_database(settings), create_database(settings)
    try:
        first_rt, second_rt = _runtime(settings, first_db), _runtime(settings, second_db)
        first = asyncio.create_task(_accept(first_rt, email="ana@empresa.es"))
        await asyncio.wait_for(writing.wait(), 10)
        second = await asyncio.wait_for(_accept(second_rt, email="eva@empresa.es"), 5)
        written.set()
        first_result = await asyncio.wait_for(first, 10)
        assert (second.lead.owner, first_result.lead.owner) == ("marta", "pablo")
        async with first_db.sessionmaker() as session:
            stored = dict((await session.execute(select(Lead.email, Lead.owner))).all())
        assert stored == {"eva@empresa.es": "marta", "ana@empresa.es": "pablo"}
    finally:
        written.set()
        await first_db.dispose()
        await second_db.dispose()

"""Intake against a lead erased or merged away while it decides, and a review beside a
batch (PostgreSQL: SQLite's one writer keeps another transaction from landing between
intake's read of its candidates and its lock on them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.leads import repository as repo
from cauce.leads import repository_lead as repo_lead
from cauce.leads import service_edit, service_review
from cauce.leads.errors import IntakeBusy
from cauce.leads.models import Lead, LeadSource, RoutingCursor
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_requests import LeadReviewIn
from cauce.leads.service import LeadsRuntime, intake_many
from tests.conftest import SettingsFactory
from tests.leads.api_client import JOSE
from tests.leads.test_review import LOOKALIKE, OTHER, THIRD, WITH_REGION

ANA = {"email": "ana.garcia@nandu.es", "first_name": "Ana", "last_name": "García López"}


class NoQueue:
    """No CRM configured: only an erasure's refresh of PostgreSQL's statistics is
    deferred (`request_analyze`), and dropped here."""

    engine = "none"

    async def defer(self, _session: object, task: str, _payload: object, **_: object) -> None:
        return None


@pytest.fixture
async def db(settings: Settings, backend: str) -> AsyncIterator[Database]:
    if backend != "postgresql":
        pytest.skip("on SQLite the intake's transaction holds the only writer throughout")
    database = create_database(settings)
    yield database
    await database.dispose()


def _runtime(settings: Settings, db: Database) -> LeadsRuntime:
    queue: Any = NoQueue()
    return LeadsRuntime(settings=settings, sessionmaker=db.sessionmaker, queue=queue)


async def _intake(rt: LeadsRuntime, *leads: dict[str, Any]) -> list[Any]:
    async with unit_of_work(rt.sessionmaker) as session:
        results = await intake_many(session, rt, [LeadIn.model_validate(x) for x in leads])
        await session.flush()
        return [(r.outcome, r.lead.uid) for r in results]


def _erase_before_lock(monkeypatch: pytest.MonkeyPatch, rt: LeadsRuntime, uid: str) -> list[int]:
    """Make another transaction erase `uid` (and commit) just before intake first locks
    the leads it merges into; returns the lock calls seen."""
    calls: list[int] = []
    lock = repo.leads_by_id

    async def erasing(session: AsyncSession, ids: Collection[int]) -> dict[int, Lead]:
        calls.append(len(ids))
        if len(calls) == 1:
            async with unit_of_work(rt.sessionmaker) as other:
                await service_edit.erase(other, rt, uid, actor="gdpr")
        return await lock(session, ids)

    monkeypatch.setattr(repo, "leads_by_id", erasing)
    return calls


async def test_an_arrival_never_merges_into_a_lead_erased_meanwhile(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead erased after intake read it as a candidate but before intake locked it is
    not merged into: intake decides again and creates the arrival as a lead of its own,
    and the tombstone keeps no personal data."""
    rt = _runtime(settings, db)
    [(outcome, ana)] = await _intake(rt, ANA)
    assert outcome == "created"
    calls = _erase_before_lock(monkeypatch, rt, ana)

    [(outcome, uid)] = await _intake(rt, {**ANA, "phone": "+34 612 345 678"})

    assert (outcome, len(calls)) == ("created", 2)  # decided twice: merge, then create
    assert uid != ana
    async with db.sessionmaker() as session:
        tombstone = await repo_lead.by_uid(session, ana)
        assert tombstone is not None
        assert tombstone.erased_at is not None
        assert (tombstone.email, tombstone.phone, tombstone.first_name) == (None, None, None)
        lead = await repo_lead.by_uid(session, uid)
        assert lead is not None
        assert (lead.email, lead.phone) == ("ana.garcia@nandu.es", "+34612345678")
        sources = (
            await session.scalars(select(LeadSource.lead_id).where(LeadSource.lead_id == lead.id))
        ).all()
        assert len(sources) == 1


async def test_intake_gives_up_when_its_targets_keep_vanishing(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions are retried a bounded number of times; past that the intake is refused
    as busy (503, retry later) with nothing written."""
    rt = _runtime(settings, db)
    [(_, ana)] = await _intake(rt, ANA)
    calls: list[int] = []
    lock = repo.leads_by_id

    async def always_gone(session: AsyncSession, ids: Collection[int]) -> dict[int, Lead]:
        calls.append(len(ids))
        await lock(session, ids)
        return {}  # as if every lead merged into had gone

    monkeypatch.setattr(repo, "leads_by_id", always_gone)
    with pytest.raises(IntakeBusy):
        await _intake(rt, {**ANA, "phone": "+34 612 345 678"})
    assert len(calls) == 3
    async with db.sessionmaker() as session:
        count = len((await session.scalars(select(Lead.id))).all())
        lead = await repo_lead.by_uid(session, ana)
    assert count == 1
    assert lead is not None
    assert lead.erased_at is None
    assert lead.phone is None


def _before_first_lock(
    monkeypatch: pytest.MonkeyPatch, action: Callable[[], Awaitable[None]]
) -> list[int]:
    """Run `action` (another transaction, committed) just before intake first locks the
    leads it merges into or holds against; returns the lock calls seen."""
    calls: list[int] = []
    lock = repo.leads_by_id
    acting = False

    async def hooked(session: AsyncSession, ids: Collection[int]) -> dict[int, Lead]:
        nonlocal acting
        if acting:  # the action's own locks (a review takes them too)
            return await lock(session, ids)
        calls.append(len(ids))
        if len(calls) == 1:
            acting = True
            try:
                await action()
            finally:
                acting = False
        return await lock(session, ids)

    monkeypatch.setattr(repo, "leads_by_id", hooked)
    return calls


async def _held_against(rt: LeadsRuntime, uid: str) -> Lead | None:
    async with rt.sessionmaker() as session:
        lead = await repo_lead.by_uid(session, uid)
        assert lead is not None
        if lead.possible_duplicate_of is None:
            return None
        return await session.get(Lead, lead.possible_duplicate_of)


async def test_a_new_lead_is_never_held_against_a_lead_erased_meanwhile(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookalike of José, decided while José is erased, is not left held against his
    tombstone (where no review could release it): intake decides again and creates it."""
    rt = _runtime(settings, db)
    [(_, jose)] = await _intake(rt, JOSE)

    async def erase() -> None:
        async with unit_of_work(rt.sessionmaker) as other:
            await service_edit.erase(other, rt, jose, actor="gdpr")

    calls = _before_first_lock(monkeypatch, erase)
    [(outcome, uid)] = await _intake(rt, LOOKALIKE)

    assert (outcome, len(calls)) == ("created", 2)
    assert await _held_against(rt, uid) is None


async def test_a_new_lead_is_never_held_against_a_lead_merged_meanwhile(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead resembling a held one, decided while a review merges that one into José, is
    held against a live lead, never the merged one's tombstone."""
    rt = _runtime(settings, db)
    await _intake(rt, JOSE)
    [(outcome, lookalike)] = await _intake(rt, WITH_REGION)
    assert outcome == "held_for_review"

    async def review() -> None:
        async with unit_of_work(rt.sessionmaker) as other:
            decision = LeadReviewIn(decision="duplicate")
            await service_review.review(other, rt, lookalike, decision, "person")

    calls = _before_first_lock(monkeypatch, review)
    [(outcome, third)] = await _intake(rt, THIRD)

    assert len(calls) == 2  # decided again once the merge was seen
    against = await _held_against(rt, third)
    assert against is None or against.erased_at is None, (outcome, against)


async def test_a_review_and_a_batch_merging_around_it_do_not_deadlock(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review merging H into T re-points the leads held against H (D); a batch merging
    into D and into T at the same moment waits for it instead of deadlocking: the review
    locks D with H and T, in the one id order intake locks in."""
    rt = _runtime(settings, db)
    await _intake(rt, JOSE)
    [(_, h)] = await _intake(rt, WITH_REGION)
    [(outcome, _)] = await _intake(rt, THIRD)  # D: held against H
    assert outcome == "held_for_review"
    [(_, t)] = await _intake(rt, OTHER)  # T, newer than D
    re_point = repo_lead.hold_against
    reviewing = asyncio.Event()
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )

    async def slow_re_point(session: AsyncSession, from_id: int, to_id: int) -> None:
        # Let the batch start and reach its locks before the review re-points D.
        reviewing.set()
        for _ in range(400):
            async with rt.sessionmaker() as probe:
                if await probe.scalar(waiting):
                    break
            await asyncio.sleep(0.025)
        await re_point(session, from_id, to_id)

    monkeypatch.setattr(repo_lead, "hold_against", slow_re_point)

    async def review() -> None:
        async with unit_of_work(rt.sessionmaker) as session:
            decision = LeadReviewIn(decision="duplicate", into=t)
            await service_review.review(session, rt, h, decision, "person")

    async def batch() -> list[Any]:
        await reviewing.wait()
        return await _intake(rt, {**THIRD, "job_title": "CEO"}, {**OTHER, "company": "Duero"})

    results = await asyncio.gather(review(), batch(), return_exceptions=True)

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert [outcome for outcome, _ in results[1]] == ["merged", "merged"]


async def test_overlapping_batches_side_by_side_store_each_email_once(
    settings: Settings, db: Database
) -> None:
    """Three batches of 200 leads on three connections at once (three processes, as far as
    PostgreSQL can tell), each sharing half its emails and phones with the next, in
    another order: with no intake lock over every key any more (ADR 0014) they wait for
    each other only on the keys they share, never in a circle, and every email and phone
    is one lead."""
    others = [create_database(settings) for _ in range(2)]
    try:
        runtimes = [_runtime(settings, database) for database in (db, *others)]

        def lead(n: int) -> dict[str, Any]:
            return {"email": f"p{n}@empresa.es", "phone": f"+3461{n:07d}"}

        batches = [
            [lead(n) for n in range(0, 200)],
            [lead(n) for n in reversed(range(100, 300))],
            [lead(n) for n in range(200, 400)][::3]
            + [lead(n) for n in range(200, 400)][1::3]
            + [lead(n) for n in range(200, 400)][2::3],
        ]
        taking = (_intake(rt, *batch) for rt, batch in zip(runtimes, batches, strict=True))
        answers = await asyncio.wait_for(asyncio.gather(*taking), 60)
        outcomes = [outcome for answer in answers for outcome, _ in answer]
        assert (outcomes.count("created"), outcomes.count("merged")) == (400, 200)
        async with db.sessionmaker() as session:
            stored = (await session.execute(select(Lead.email, Lead.phone))).all()
            locks = (await session.execute(text("SELECT count(*) FROM lead_key_locks"))).scalar()
        assert len(stored) == len({email for email, _ in stored}) == 400
        assert len({phone for _, phone in stored}) == 400
        assert locks == 0
    finally:
        for database in others:
            await database.dispose()


async def test_batches_side_by_side_give_each_turn_of_a_rotation_once(
    settings_factory: SettingsFactory, backend: str
) -> None:
    """Three 200-lead batches routed to one team (Marta with capacity 2, Pablo with 1), on
    three connections at once: each reads the rotation, writes, and advances it after,
    mending its owners when another took those turns first. So turns 0-599 each go to one
    lead: 400 to Marta and 200 to Pablo, and the rotation stands at 600 (without the
    mending, turns were given twice: 399 and 201)."""
    if backend != "postgresql":
        pytest.skip("on SQLite the intake's transaction holds the only writer throughout")
    settings = settings_factory(
        leads={
            "teams": {"spain": [{"name": "marta", "capacity": 2}, {"name": "pablo"}]},
            "default_team": "spain",
        }
    )
    databases = [create_database(settings) for _ in range(3)]
    try:
        batches = [[{"email": f"r{b}x{i}@empresa.es"} for i in range(200)] for b in range(3)]
        taking = (
            _intake(_runtime(settings, database), *batch)
            for database, batch in zip(databases, batches, strict=True)
        )
        await asyncio.wait_for(asyncio.gather(*taking), 60)
        async with databases[0].sessionmaker() as session:
            owners = (await session.scalars(select(Lead.owner))).all()
            position = await session.scalar(select(RoutingCursor.position))
        assert (owners.count("marta"), owners.count("pablo"), position) == (400, 200, 600)
    finally:
        for database in databases:
            await database.dispose()

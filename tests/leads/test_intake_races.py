"""Intake against a lead erased while it decides (PostgreSQL: SQLite's one writer keeps
an erasure from landing between intake's read of its candidates and its lock on them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.leads import repository as repo
from cauce.leads import service_edit
from cauce.leads.errors import IntakeBusy
from cauce.leads.models import Lead, LeadSource
from cauce.leads.schemas import LeadIn
from cauce.leads.service import LeadsRuntime, intake_many

ANA = {"email": "ana.garcia@nandu.es", "first_name": "Ana", "last_name": "García López"}


class NoQueue:
    """No CRM configured: nothing is deferred."""

    engine = "none"


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
        tombstone = await repo.by_uid(session, ana)
        assert tombstone is not None
        assert tombstone.erased_at is not None
        assert (tombstone.email, tombstone.phone, tombstone.first_name) == (None, None, None)
        lead = await repo.by_uid(session, uid)
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
        lead = await repo.by_uid(session, ana)
    assert count == 1
    assert lead is not None
    assert lead.erased_at is None
    assert lead.phone is None

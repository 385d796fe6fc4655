"""The cache of stored candidates (`KnownLeads`), on both databases: it keeps only what a
committed transaction read, never serves a lead at a version it is no longer at (a change
made by another process included), and an erasure forgets."""

from __future__ import annotations

import asyncio
from typing import Any

from cauce.core.db import unit_of_work
from cauce.leads import candidates, service_edit
from cauce.leads.matching.known import Known, KnownLeads
from cauce.leads.models import Lead
from cauce.leads.schemas import LeadPatch
from cauce.leads.service import LeadsRuntime, intake
from tests.leads.test_intake_fast import MakeRuntime, _lead_in, make_rt

__all__ = ["make_rt"]  # the fixture, shared with test_intake_fast

CARMEN = {
    "email": "carmen.ortega@ferreteriasol.es",
    "first_name": "Carmen",
    "last_name": "Ortega Ruiz",
    "company": "Ferretería Sol",
    "city": "Cádiz",
}


async def _store(rt: LeadsRuntime, fields: dict[str, Any]) -> Lead:
    async with unit_of_work(rt.sessionmaker) as session:
        return (await intake(session, rt, _lead_in(fields), actor="t")).lead


async def _read(rt: LeadsRuntime, ids: set[int], commit: bool) -> dict[int, Known]:
    """Read candidates as intake does, then commit or roll back."""
    async with rt.sessionmaker() as session:
        found = await candidates.read_candidates(session, rt.known, ids)
        await (session.commit() if commit else session.rollback())
    return found


async def test_only_committed_reads_are_kept(make_rt: MakeRuntime) -> None:
    """Candidates read in a transaction that rolls back are not kept; committed, they are,
    and the next read serves them without reading their fields again."""
    rt, _ = make_rt()
    carmen = await _store(rt, CARMEN)
    rt.known = KnownLeads()  # forget what her own intake wrote
    found = await _read(rt, {carmen.id}, commit=False)
    assert found[carmen.id].values[0] == CARMEN["email"]
    assert carmen.id not in rt.known
    await _read(rt, {carmen.id}, commit=True)
    held = rt.known.get(carmen.id, carmen.version)
    assert held is not None
    again = await _read(rt, {carmen.id}, commit=True)
    assert again[carmen.id] is held  # served from the cache


async def test_what_an_intake_writes_is_held_once_it_commits(make_rt: MakeRuntime) -> None:
    """A created lead, and a lead merged into, are held at their new versions as a read
    would give them, once the intake commits; an intake rolled back leaves nothing."""
    rt, _ = make_rt()
    async with rt.sessionmaker() as session:
        gone = (await intake(session, rt, _lead_in(CARMEN), actor="t")).lead
        await session.flush()
        assert gone.id not in rt.known  # not before the commit
        await session.rollback()
    assert gone.id not in rt.known
    carmen = await _store(rt, CARMEN)
    held = rt.known.get(carmen.id, 1)
    assert held is not None
    assert held.uid == carmen.uid  # not the rolled-back lead, whose id may be reused
    again = await _store(rt, {**CARMEN, "phone": "956 111 222"})  # merged: version 2
    assert again.id == carmen.id
    merged = rt.known.get(carmen.id, 2)
    assert merged is not None
    fresh = KnownLeads()
    rt.known, kept = fresh, rt.known
    read = (await _read(rt, {carmen.id}, commit=True))[carmen.id]
    assert (merged.version, merged.uid, merged.values) == (read.version, read.uid, read.values)
    assert merged.values[1] == "+34956111222"
    assert merged.features == read.features
    assert kept.get(carmen.id, 1) is None  # the old version is never served


async def test_a_change_made_elsewhere_is_seen(make_rt: MakeRuntime) -> None:
    """Process A holds Carmen; process B gives her a phone; a lead with only that phone
    then merges into her through A: A read her again at her new version."""
    here, _ = make_rt()
    elsewhere, _ = make_rt()
    carmen = await _store(here, CARMEN)
    await _read(here, {carmen.id}, commit=True)
    assert here.known.get(carmen.id, carmen.version) is not None
    async with unit_of_work(elsewhere.sessionmaker) as session:
        await service_edit.patch(
            session, elsewhere, carmen.uid, LeadPatch.model_validate({"phone": "956 111 222"}), "t"
        )
    async with unit_of_work(here.sessionmaker) as session:
        result = await intake(session, here, _lead_in({"phone": "+34 956 111 222"}), actor="t")
    assert result.outcome == "merged"
    assert result.lead.uid == carmen.uid
    assert here.known.get(carmen.id, carmen.version) is None  # the old version is stale


async def test_an_erasure_forgets(make_rt: MakeRuntime) -> None:
    """The process that erases a lead drops its fields at once."""
    rt, _ = make_rt()
    carmen = await _store(rt, CARMEN)
    await _read(rt, {carmen.id}, commit=True)
    assert carmen.id in rt.known
    async with unit_of_work(rt.sessionmaker) as session:
        await service_edit.erase(session, rt, carmen.uid, "t")
    assert carmen.id not in rt.known
    assert await _read(rt, {carmen.id}, commit=True) == {}  # erased: no candidate


async def test_a_read_from_before_an_erasure_is_not_held_after_it(
    make_rt: MakeRuntime,
) -> None:
    """An intake that read Carmen before her erasure and commits after it does not put
    her personal data back in the cache."""
    rt, _ = make_rt()
    carmen = await _store(rt, CARMEN)
    rt.known = KnownLeads()
    async with rt.sessionmaker() as slow:
        await candidates.read_candidates(slow, rt.known, {carmen.id})  # before the erasure
        async with unit_of_work(rt.sessionmaker) as session:
            await service_edit.erase(session, rt, carmen.uid, "t")
        await slow.commit()  # the read joins the cache now, after the erasure
    assert carmen.id not in rt.known


def test_the_cache_is_bounded() -> None:
    """Least recently used first out."""
    cache = KnownLeads(size=2)
    row = tuple[str | None, ...]((None,) * 14)
    entry = Known(1, "u", row, None)  # type: ignore[arg-type]
    cache.hold(1, entry)
    cache.hold(2, entry)
    assert cache.get(1, 1) is entry  # 1 is now the most recent
    cache.hold(3, entry)
    assert 2 not in cache
    assert 1 in cache
    assert 3 in cache
    assert cache.get(1, 2) is None  # another version is never served


async def test_reads_in_a_released_savepoint_wait_for_the_real_commit(
    make_rt: MakeRuntime,
) -> None:
    """A savepoint's release is not the commit: reads of the transaction's own lead, made
    inside one, are dropped when the transaction then rolls back."""
    rt, _ = make_rt()
    async with rt.sessionmaker() as session:
        ghost = (await intake(session, rt, _lead_in(CARMEN), actor="t")).lead.id
        async with session.begin_nested():
            await candidates.read_candidates(session, rt.known, {ghost})
        await session.rollback()
    assert ghost not in rt.known


async def test_concurrent_merges_into_one_lead_both_land(make_rt: MakeRuntime) -> None:
    """Two transactions merging into one lead at once: the second waits for the first
    (the lead is locked), so each merge gets its own version and no field is lost."""
    rt, _ = make_rt()
    carmen = await _store(rt, CARMEN)
    second_done = asyncio.Event()

    async def second() -> None:
        async with unit_of_work(rt.sessionmaker) as session:
            more = {"email": CARMEN["email"], "job_title": "Gerente"}
            await intake(session, rt, _lead_in(more), actor="t")
        second_done.set()

    async with unit_of_work(rt.sessionmaker) as session:
        await intake(session, rt, _lead_in({**CARMEN, "region": "Andalucía"}), actor="t")
        task = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not second_done.is_set()  # waiting for the first to commit
    await asyncio.wait_for(task, 30)
    async with rt.sessionmaker() as session:
        lead = await session.get(Lead, carmen.id)
        assert lead is not None
        assert (lead.region, lead.job_title, lead.version) == ("Andalucía", "Gerente", 3)

"""`leads.candidate_cache_size`: how many prepared candidates a process keeps. Leads that
fell out of the cache (or were never in it) are read again and still matched."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cauce.app import Resources
from cauce.core.config import Settings
from cauce.core.config_leads import LeadsSettings
from cauce.core.db import utcnow
from cauce.leads import candidates, wiring
from cauce.leads.matching.known import DEFAULT_SIZE, Known, KnownLeads
from cauce.leads.matching.plan import MATCH_COLUMNS, MatchRow
from tests.conftest import SettingsFactory
from tests.leads.api_client import JOSE, leads_api, post_lead, serve_app

OTHERS = [
    {"email": f"persona{i}@ejemplo{i}.es", "first_name": name, "last_name": surname}
    for i, (name, surname) in enumerate(
        [("Lucía", "Prieto Gil"), ("Andrés", "Sanz Vidal"), ("Marta", "Rubio Pardo")]
    )
]


def test_the_default_is_the_caches_own() -> None:
    """The setting's default and `KnownLeads()`'s (the runtime a test builds by hand)
    are one size."""
    assert LeadsSettings().candidate_cache_size == DEFAULT_SIZE == KnownLeads().size


async def test_the_process_keeps_at_most_the_setting(settings_factory: SettingsFactory) -> None:
    """With room for 2, the app's cache holds the 2 leads used last; José, who fell out,
    is read from the database again and his second arrival still merges into him."""
    async with leads_api(settings_factory, candidate_cache_size=2) as (app, api):
        known = app.state.resources.leads.known
        assert isinstance(app.state.resources, Resources)
        assert known.size == 2
        jose = await post_lead(api, JOSE)
        for other in OTHERS:
            await post_lead(api, other)
        assert len(known) == 2
        again = await post_lead(api, {**JOSE, "email": None, "phone": "+34 954 123 456"})
        assert again["outcome"] == "merged"
        assert again["id"] == jose["id"]


async def test_no_cache_at_all_still_matches(settings_factory: SettingsFactory) -> None:
    """0 keeps nothing: every candidate is read from the database, and matched alike."""
    async with leads_api(settings_factory, candidate_cache_size=0) as (app, api):
        known = app.state.resources.leads.known
        jose = await post_lead(api, JOSE)
        await post_lead(api, OTHERS[0])
        assert len(known) == 0
        again = await post_lead(api, {**JOSE, "phone": "+34 954 123 456"})
        assert (again["outcome"], again["id"]) == ("merged", jose["id"])


def _row(**values: str) -> MatchRow:
    # Each value a string object of its own, as two rows read from the database have.
    return tuple("".join(list(values[name])) if name in values else None for name in MATCH_COLUMNS)


def test_what_many_leads_share_is_held_once() -> None:
    """Two cached leads of one name, company and city keep one copy of each (so the
    cache's memory grows with what is personal to a lead: email, phone, id)."""
    common = {
        "first_name": "María José",
        "last_name": "García de la Fuente",
        "company": "Talleres Ebro, S.L.",
        "city": "Zaragoza",
        "region": "Aragón",
        "country": "ES",
    }
    a = Known.read(1, "a", _row(email="mj.garcia@talleresebro.es", **common))
    b = Known.read(1, "b", _row(email="mariajose@gmail.com", **common))
    for column in common:
        i = MATCH_COLUMNS.index(column)
        assert a.values[i] == b.values[i] == common[column]
        assert a.values[i] is b.values[i]
    fa, fb = a.features, b.features
    assert fa.last_tokens == ("garcia", "fuente")
    for name in ("first_tokens", "last_tokens", "last_initials", "company", "city", "name_key"):
        assert getattr(fa, name) is getattr(fb, name), name
    assert (fa.email_key, fb.email_key) == ("mj.garcia@talleresebro.es", "mariajose@gmail.com")


async def _restart_warm(settings: Settings) -> KnownLeads:
    """A fresh app on `settings` (a restart), once its warm-up is done: its cache."""
    async with serve_app(settings) as (app, _):
        runtime = app.state.resources.leads
        assert runtime.warming is not None
        await runtime.warming
        known: KnownLeads = runtime.known
        return known


async def test_a_restarted_process_starts_with_the_stored_leads(
    settings_factory: SettingsFactory,
) -> None:
    """At start-up the cache is filled with the stored leads at their versions (an erased
    one left out), so the first intakes after a restart do not read them again; with
    room for fewer, the newest fill it."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}
    )
    async with serve_app(settings) as (_, api):
        jose = await post_lead(api, JOSE)
        others = [await post_lead(api, other) for other in OTHERS]
        merged = await post_lead(api, {**JOSE, "phone": "+34 954 123 456"})
        assert merged["outcome"] == "merged"
        erased = others[0]["id"]
        assert (await api.delete(f"/v1/leads/{erased}")).status_code == 204
        stored = {
            uid: (await api.get(f"/v1/leads/{uid}")).json()
            for uid in (jose["id"], others[1]["id"], others[2]["id"])
        }
    known = await _restart_warm(settings)
    held = {entry.uid: entry for _, entry in known.entries()}
    assert set(held) == set(stored)
    assert held[jose["id"]].version == 2  # the merge's version, with its phone
    assert "+34954123456" in held[jose["id"]].values
    assert held[jose["id"]].features.last_tokens == ("fernandez", "ruiz")
    leads = settings.leads.model_copy(update={"candidate_cache_size": 2})
    small = await _restart_warm(settings.model_copy(update={"leads": leads}))
    assert {entry.uid for _, entry in small.entries()} == {others[1]["id"], others[2]["id"]}


def test_a_warm_up_only_fills_free_room() -> None:
    """`offer` never replaces what is held, never passes the bound or an erasure's
    tombstone, and puts what it adds first in line to leave."""
    row = _row(first_name="Ana")
    used, warm, newer = (Known.read(v, f"u{v}", row) for v in (1, 2, 3))
    cache = KnownLeads(size=3)
    cache.hold(1, used)
    cache.forget(9)
    cache.offer(1, newer)  # held already: kept as it is
    cache.offer(9, warm)  # erased here: never held again
    cache.offer(2, warm)
    assert cache.room() == 1
    assert cache.get(1, 1) is used
    assert 9 not in cache
    cache.offer(3, warm)
    cache.offer(4, warm)  # no room left
    assert (cache.room(), 4 in cache) == (0, False)
    assert [lead_id for lead_id, _ in cache.entries()] == [3, 2, 1]  # warmed ones go first
    cache.hold(5, used)  # intake's entry pushes out the last one warmed
    assert [lead_id for lead_id, _ in cache.entries()] == [2, 1, 5]


async def test_another_process_erasure_leaves_this_cache(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead erased through one app (process) leaves the cache of another that held
    it, at that one's next sweep; the eraser forgets it at once."""
    monkeypatch.setattr(wiring, "ERASED_SWEEP_SECONDS", 0.05)
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}
    )
    async with serve_app(settings) as (first, api):
        jose = await post_lead(api, JOSE)
        kept = await post_lead(api, OTHERS[0])
        async with serve_app(settings) as (second, _):
            other = second.state.resources.leads
            assert other.warming is not None
            await other.warming
            uids = {entry.uid for _, entry in other.known.entries()}
            assert uids == {jose["id"], kept["id"]}
            assert (await api.delete(f"/v1/leads/{jose['id']}")).status_code == 204
            assert jose["id"] not in {e.uid for _, e in first.state.resources.leads.known.entries()}
            async with asyncio.timeout(10):
                while True:
                    uids = {entry.uid for _, entry in other.known.entries()}
                    if jose["id"] not in uids:
                        break
                    await asyncio.sleep(0.02)
            assert uids == {kept["id"]}


async def test_leads_erased_since_a_time_are_forgotten(settings_factory: SettingsFactory) -> None:
    """The first sweep's check by time (for erasures whose history rows committed after
    the process read where to start): a lead erased at or after the time is forgotten,
    not one erased before it."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}
    )
    async with serve_app(settings) as (app, api):
        runtime = app.state.resources.leads
        jose = await post_lead(api, JOSE)
        kept = await post_lead(api, OTHERS[0])
        held = {entry.uid: lead_id for lead_id, entry in runtime.known.entries()}
        assert set(held) == {jose["id"], kept["id"]}
        assert (await api.delete(f"/v1/leads/{jose['id']}")).status_code == 204
        runtime.known = KnownLeads()  # another process's cache, which still holds him
        for uid, lead_id in held.items():
            runtime.known.hold(lead_id, Known.read(1, uid, _row(first_name="X")))
        later = utcnow() + timedelta(minutes=1)
        await candidates.forget_erased_at_or_after(runtime.sessionmaker, runtime.known, later)
        assert {entry.uid for _, entry in runtime.known.entries()} == set(held)
        earlier = utcnow() - timedelta(minutes=1)
        await candidates.forget_erased_at_or_after(runtime.sessionmaker, runtime.known, earlier)
        assert {entry.uid for _, entry in runtime.known.entries()} == {kept["id"]}

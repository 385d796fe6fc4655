"""The candidate cache on /metrics: how many stored leads a process keeps prepared
(`cauce_leads_candidate_cache_entries`), how many it may (`..._capacity`, the setting),
and how many it dropped for room (`..._evictions_total`). Read from the cache before a
scrape and every few seconds, never on intake's path."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cauce.leads import wiring
from cauce.leads.matching.known import Known, KnownLeads
from cauce.leads.matching.plan import MATCH_COLUMNS
from cauce.leads.metrics import LeadsMetrics
from tests.conftest import SettingsFactory
from tests.leads.api_client import JOSE, leads_api, post_lead

ENTRIES = "cauce_leads_candidate_cache_entries"
CAPACITY = "cauce_leads_candidate_cache_capacity"
EVICTIONS = "cauce_leads_candidate_cache_evictions_total"

OTHERS = [
    {"email": f"persona{i}@ejemplo{i}.es", "first_name": name, "last_name": surname}
    for i, (name, surname) in enumerate(
        [("Lucía", "Prieto Gil"), ("Andrés", "Sanz Vidal"), ("Marta", "Rubio Pardo")]
    )
]


async def _scrape(api: httpx.AsyncClient) -> dict[str, float]:
    response = await api.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name in (ENTRIES, CAPACITY, EVICTIONS)
    }


async def test_metrics_show_the_live_cache_and_the_setting(
    settings_factory: SettingsFactory,
) -> None:
    """Each scrape reads the cache as it is now: empty at first, then one entry per lead
    taken in; the capacity is `leads.candidate_cache_size`; nothing evicted with room."""
    async with leads_api(settings_factory, candidate_cache_size=100) as (app, api):
        known = app.state.resources.leads.known
        assert known.size == 100
        await app.state.resources.leads.warming  # an empty database: nothing to fill
        assert await _scrape(api) == {ENTRIES: 0, CAPACITY: 100, EVICTIONS: 0}
        await post_lead(api, JOSE)
        for other in OTHERS:
            await post_lead(api, other)
        assert len(known) == 4
        assert await _scrape(api) == {ENTRIES: 4, CAPACITY: 100, EVICTIONS: 0}


async def test_a_full_cache_shows_entries_at_capacity_and_evictions(
    settings_factory: SettingsFactory,
) -> None:
    """More leads stored than the cache holds: entries stay at the capacity and every
    lead dropped for room is counted, once (a second scrape adds nothing)."""
    async with leads_api(settings_factory, candidate_cache_size=2) as (app, api):
        known = app.state.resources.leads.known
        await post_lead(api, JOSE)
        for other in OTHERS:
            await post_lead(api, other)
        seen = await _scrape(api)
        assert known.evicted >= 2
        assert seen == {ENTRIES: 2, CAPACITY: 2, EVICTIONS: known.evicted}
        assert await _scrape(api) == seen


def test_the_counter_follows_the_cache_by_difference() -> None:
    """`candidate_cache_seen` adds only what the cache evicted since the last copy."""
    registry = CollectorRegistry()
    metrics = LeadsMetrics(registry)
    known = KnownLeads(1)
    row = tuple(None for _ in MATCH_COLUMNS)
    for lead_id in range(1, 4):
        known.hold(lead_id, Known.read(1, f"u{lead_id}", row))
    assert (len(known), known.evicted) == (1, 2)
    for _ in range(2):
        metrics.candidate_cache_seen(len(known), known.size, known.evicted)
        assert registry.get_sample_value(EVICTIONS) == 2
    assert registry.get_sample_value(ENTRIES) == 1
    assert registry.get_sample_value(CAPACITY) == 1


async def test_the_gauges_are_copied_without_a_scrape(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `CANDIDATE_CACHE_GAUGES_SECONDS` too: the processes a scrape does not reach
    (the other processes of `--workers N`, `cauce worker`) keep theirs current."""
    monkeypatch.setattr(wiring, "CANDIDATE_CACHE_GAUGES_SECONDS", 0.01)
    async with leads_api(settings_factory, candidate_cache_size=100) as (app, api):
        registry = app.state.resources.registry
        await post_lead(api, JOSE)
        for _ in range(200):
            if registry.get_sample_value(ENTRIES) == 1:
                break
            await asyncio.sleep(0.01)
        assert registry.get_sample_value(ENTRIES) == 1
        assert registry.get_sample_value(CAPACITY) == 100

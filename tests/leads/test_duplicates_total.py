"""`GET /v1/leads/{id}` shows at most 50 related leads: `duplicates_total` says how many
are held against the lead (before, a 51st and later were left out without a word: a
team's `info@` can gather hundreds of held arrivals)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from cauce.app import Resources
from cauce.core.db import unit_of_work
from cauce.leads.models import Lead
from tests.leads.api_client import get_lead, post_lead


async def _hold_against(app: FastAPI, target: str, uids: list[str]) -> None:
    """Hold these leads as possible duplicates of `target`, as intake holds an arrival."""
    resources: Resources = app.state.resources
    async with unit_of_work(resources.db.sessionmaker) as session:
        target_id = (
            (await session.execute(Lead.__table__.select().where(Lead.uid == target))).one().id
        )
        await session.execute(
            update(Lead)
            .where(Lead.uid.in_(uids))
            .values(possible_duplicate_of=target_id, sync_status="held")
        )


async def test_the_total_counts_every_lead_held_against_it(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    info = await post_lead(api, {"email": "info@aceitunasdelsur.es", "first_name": "Info"})
    batch = await api.post(
        "/v1/leads/batch",
        json={"items": [{"email": f"persona{i}@correo.es"} for i in range(53)]},
    )
    assert batch.status_code == 200, batch.text
    uids = [item["id"] for item in batch.json()["items"]]
    await _hold_against(leads_app, info["id"], uids[:52])
    await api.delete(f"/v1/leads/{uids[51]}")  # an erased one is not counted

    lead = await get_lead(api, info["id"])
    assert len(lead["duplicates"]) == 50
    assert [d["lead_id"] for d in lead["duplicates"]] == uids[:50]
    assert lead["duplicates_total"] == 51

    held = await get_lead(api, uids[0])
    assert held["duplicate_of"] == info["id"]
    assert (held["duplicates"], held["duplicates_total"]) == ([], 0)
    alone = await get_lead(api, uids[52])
    assert (alone["duplicates"], alone["duplicates_total"]) == ([], 0)


async def test_a_few_held_leads_are_all_shown_and_counted(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    info = await post_lead(api, {"email": "info@bodegas.es", "first_name": "Info"})
    others = [(await post_lead(api, {"email": f"p{i}@bodegas.es"}))["id"] for i in range(3)]
    await _hold_against(leads_app, info["id"], others)
    lead = await get_lead(api, info["id"])
    assert [d["lead_id"] for d in lead["duplicates"]] == others
    assert all(d["held_for_review"] for d in lead["duplicates"])
    assert lead["duplicates_total"] == 3


async def test_the_lead_it_is_held_against_is_shown_even_newer_than_fifty(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A held lead a review pointed at a newer lead, with 51 held against it: its
    `duplicate_of` still names that lead (before: the 50 older ones filled the list and
    it was left out, so `duplicate_of` was null)."""
    info = await post_lead(api, {"email": "info@aceitunasdelsur.es", "first_name": "Info"})
    batch = await api.post(
        "/v1/leads/batch",
        json={"items": [{"email": f"persona{i}@correo.es"} for i in range(52)]},
    )
    assert batch.status_code == 200, batch.text
    uids = [item["id"] for item in batch.json()["items"]]
    await _hold_against(leads_app, info["id"], uids[:51])
    await _hold_against(leads_app, uids[51], [info["id"]])  # the newest, after a review

    lead = await get_lead(api, info["id"])
    assert lead["duplicate_of"] == uids[51]
    assert [d["lead_id"] for d in lead["duplicates"]] == uids[:50]
    assert lead["duplicates_total"] == 51

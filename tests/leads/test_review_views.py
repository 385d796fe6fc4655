"""What a reviewer sees of a held lead, on both databases (found by an audit of the review
workflow, helper-106):

1. Why it is held: the match kind, the confidence and the comparison's reasons were in
   the intake's answer alone (a web form's key never sees it); the lead keeps them now
   (`hold`, migration 0022), in its detail and in the list of held leads, and its
   `created` line says it was held.
2. The history says against which lead a `distinct` was decided, and a review's merge is
   told from an arrival's.
3. A lead held against one since erased: its detail named the erased lead while the list
   of held leads said none; both say none now.
"""

from __future__ import annotations

import csv
import io

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from cauce.core.db import unit_of_work
from cauce.leads.models import Lead
from tests.leads.api_client import JOSE, post_lead
from tests.leads.test_review import LOOKALIKE, _held_pair, _review, _rt


async def test_a_held_lead_shows_why_it_is_held(api: httpx.AsyncClient) -> None:
    jose = await post_lead(api, JOSE)
    held = await post_lead(api, LOOKALIKE)
    assert held["outcome"] == "held_for_review"
    detail = (await api.get(f"/v1/leads/{held['id']}")).json()
    assert detail["duplicate_of"] == jose["id"]
    hold = detail["hold"]
    assert (hold["match"], hold["confidence"]) == ("fuzzy", held["duplicate"]["confidence"])
    assert any(line.startswith("first_name:") for line in hold["reasons"]), hold
    assert all("José" not in line and "jfr@" not in line for line in hold["reasons"])
    created = next(h for h in detail["history"] if h["action"] == "created")
    assert created["changes"] == {"held": {"match": "fuzzy", "confidence": hold["confidence"]}}
    listed = (await api.get("/v1/leads", params={"held": "true"})).json()["items"]
    assert [item["hold"] for item in listed if item["id"] == held["id"]] == [hold]
    assert (await api.get(f"/v1/leads/{jose['id']}")).json()["hold"] is None


async def test_a_distinct_decision_names_the_lead_and_ends_the_hold(
    api: httpx.AsyncClient,
) -> None:
    jose, held = await _held_pair(api)
    confidence = (await api.get(f"/v1/leads/{held}")).json()["hold"]["confidence"]
    assert (await _review(api, held, {"decision": "distinct"})).status_code == 200
    detail = (await api.get(f"/v1/leads/{held}")).json()
    assert detail["hold"] is None
    line = detail["history"][0]
    assert line["action"] == "reviewed"
    assert line["changes"] == {"decision": "distinct", "against": jose, "confidence": confidence}


async def test_a_reviews_merge_is_told_from_an_arrivals(api: httpx.AsyncClient) -> None:
    jose, held = await _held_pair(api)
    assert (await _review(api, held, {"decision": "duplicate"})).status_code == 200
    merged = next(
        h for h in (await api.get(f"/v1/leads/{jose}")).json()["history"] if h["action"] == "merged"
    )
    assert (merged["changes"]["decision"], merged["changes"]["merged_lead"]) == ("duplicate", held)


async def test_a_lead_held_against_an_erased_one_says_so_alike_everywhere(
    api: httpx.AsyncClient,
) -> None:
    jose, held = await _held_pair(api)
    assert (await api.delete(f"/v1/leads/{jose}")).status_code == 204
    detail = (await api.get(f"/v1/leads/{held}")).json()
    listed = (await api.get("/v1/leads", params={"held": "true"})).json()["items"]
    [item] = [item for item in listed if item["id"] == held]
    assert detail["duplicate_of"] is None
    assert item["duplicate_of"] is None
    assert detail["hold"] == item["hold"]
    assert detail["hold"]["match"] == "fuzzy"  # still held: a person decides
    assert (await _review(api, held, {"decision": "distinct"})).status_code == 200


async def test_a_lead_held_before_the_evidence_was_kept_shows_an_empty_hold(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    _, held = await _held_pair(api)
    async with unit_of_work(_rt(leads_app).sessionmaker) as session:
        await session.execute(update(Lead).where(Lead.uid == held).values(hold_evidence=None))
    hold = (await api.get(f"/v1/leads/{held}")).json()["hold"]
    assert hold == {"match": None, "confidence": None, "reasons": []}


async def test_the_review_queue_can_be_worked_oldest_first(api: httpx.AsyncClient) -> None:
    """`order=oldest` lists (and pages, and exports) in the order the leads arrived: a
    review queue is worked first come first (it listed newest first only)."""
    held = []
    for n in range(3):
        await post_lead(api, {**JOSE, "email": f"jose{n}@aceitunasdelsur{n}.es"})
        lookalike = await post_lead(
            api, {**LOOKALIKE, "email": f"jfr{n}@hotmail.com", "phone": None, "city": "Sevilla"}
        )
        if lookalike["outcome"] == "held_for_review":
            held.append(lookalike["id"])
    assert len(held) >= 2, held
    first = await api.get("/v1/leads", params={"held": "true", "order": "oldest", "limit": 1})
    page = first.json()
    ids = [item["id"] for item in page["items"]]
    while page["next_cursor"]:
        params = {"held": "true", "order": "oldest", "limit": 1, "cursor": page["next_cursor"]}
        page = (await api.get("/v1/leads", params=params)).json()
        ids += [item["id"] for item in page["items"]]
    assert [i for i in ids if i in held] == held
    newest = (await api.get("/v1/leads", params={"held": "true"})).json()["items"]
    assert [item["id"] for item in newest if item["id"] in held] == held[::-1]
    # A cursor of one order is refused with the other (its filters differ).
    cursor = first.json()["next_cursor"]
    mixed = await api.get("/v1/leads", params={"held": "true", "cursor": cursor})
    assert mixed.status_code == 422, mixed.text


async def test_the_export_of_the_queue_names_the_lead_each_is_held_against(
    api: httpx.AsyncClient,
) -> None:
    """The export has `team` and `duplicate_of` (the queue could not be worked in a
    spreadsheet: nothing told a held lead from another); an import of it ignores them."""
    jose, held = await _held_pair(api)
    export = await api.get("/v1/leads/export.csv", params={"held": "true"})
    assert export.status_code == 200, export.text
    rows = list(csv.DictReader(io.StringIO(export.text.lstrip("\ufeff"))))
    [row] = [r for r in rows if r["id"] == held]
    assert row["duplicate_of"] == jose
    assert "team" in row
    everyone = await api.get("/v1/leads/export.csv")
    text = everyone.text.lstrip("\ufeff")
    [own] = [r for r in csv.DictReader(io.StringIO(text)) if r["id"] == jose]
    assert own["duplicate_of"] == ""

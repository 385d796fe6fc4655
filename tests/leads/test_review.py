"""Reviewing a lead held as a possible duplicate, on both databases: `GET /v1/leads?held=`,
and `POST /v1/leads/{id}/review` deciding `distinct` (delivered) or `duplicate` (merged,
leaving a 410 tombstone). What a review refuses, its idempotency key, the erasure of its
stored answers and its locking are in test_review_guards.py."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from cauce.app import Resources, job_worker_for
from cauce.core.jobs.ports import JobFilter, JobStatus
from cauce.leads import repository_lead as repo_lead
from cauce.leads.delivery import DELIVER_TASK
from cauce.leads.models import LeadEvent, LeadMatchKey, LeadSource
from cauce.leads.service import LeadsRuntime
from tests.leads.api_client import JOSE, post_lead
from tests.leads.test_delivery import MemoryCrm

# The guide's pair (docs/leads.md, "De-duplication"): the same name and city, another
# email and no company, is a possible duplicate (about 0.74), held for review.
LOOKALIKE = {
    "first_name": "José",
    "last_name": "Fernández Ruiz",
    "city": "Sevilla",
    "email": "jfr@hotmail.com",
    "phone": "+34 954 12 34 56",
    "job_title": "Gerente",
    "source": "event",
    "custom_fields": {"interes": "aceite"},
}
OTHER = {"first_name": "Lucía", "last_name": "Prieto", "email": "lucia@bodegasduero.es"}
# With a region he lacks, the lookalike is still held against José, and a third lead like
# it (another email) is held against the lookalike rather than José (about 0.85).
WITH_REGION = {**LOOKALIKE, "region": "Andalucía"}
THIRD = {**WITH_REGION, "email": "jfr3@hotmail.com", "phone": None}


async def _held_pair(
    api: httpx.AsyncClient, lookalike: dict[str, Any] = LOOKALIKE
) -> tuple[str, str]:
    """The ids of José and of a lead held for review against him."""
    jose = await post_lead(api, JOSE)
    held = await post_lead(api, lookalike)
    assert held["outcome"] == "held_for_review", held
    assert held["duplicate"]["lead_id"] == jose["id"]
    return jose["id"], held["id"]


async def _review(api: httpx.AsyncClient, uid: str, body: Any, **headers: str) -> httpx.Response:
    return await api.post(f"/v1/leads/{uid}/review", json=body, headers=headers)


def _rt(app: FastAPI) -> LeadsRuntime:
    rt: LeadsRuntime = app.state.leads
    return rt


async def _drain(app: FastAPI) -> None:
    resources: Resources = app.state.resources
    await job_worker_for(resources).run_until_idle(30)


async def _deliveries_waiting(app: FastAPI) -> int:
    resources: Resources = app.state.resources
    jobs = await resources.jobs.list(JobFilter(task=DELIVER_TASK, status=JobStatus.TODO))
    return len(jobs)


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


async def test_held_leads_are_listed_apart(api: httpx.AsyncClient) -> None:
    """`held=true` lists only the leads held for review, `held=false` only the others."""
    jose, held = await _held_pair(api)
    other = (await post_lead(api, OTHER))["id"]

    async def ids(**params: str) -> list[str]:
        response = await api.get("/v1/leads", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids(held="true") == [held]
    assert await ids(held="false") == [other, jose]
    assert await ids() == [other, held, jose]
    assert await ids(held="true", q="fernandez") == [held]


async def test_distinct_releases_the_hold_and_delivers_it(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """`distinct` clears the link, makes the lead pending with a delivery job waiting,
    records who decided, and the CRM then gets it."""
    jose, held = await _held_pair(api)
    await _drain(leads_app)
    assert len(crm.contacts) == 1  # the held lead waits for a person
    assert await _deliveries_waiting(leads_app) == 0

    response = await _review(api, held, {"decision": "distinct"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["email"], body["duplicate_of"]) == (held, "jfr@hotmail.com", None)
    assert await _deliveries_waiting(leads_app) == 1
    async with _rt(leads_app).sessionmaker() as session:
        lead = await repo_lead.by_uid(session, held)
        assert lead is not None
        assert (lead.sync_status, lead.possible_duplicate_of) == ("pending", None)
    detail = (await api.get(f"/v1/leads/{held}")).json()
    assert detail["duplicate_of"] is None
    event = detail["history"][0]
    assert (event["action"], event["changes"]["decision"]) == ("reviewed", "distinct")
    assert event["changes"]["against"] == jose  # test_review_views.py checks the rest
    assert event["actor"].startswith("apikey:")
    assert (await api.get(f"/v1/leads/{jose}")).json()["duplicates"] == []
    assert [i["id"] for i in (await api.get("/v1/leads?held=true")).json()["items"]] == []

    await _drain(leads_app)
    assert len(crm.contacts) == 2
    assert (await api.get(f"/v1/leads/{held}")).json()["sync"]["status"] == "synced"


async def test_an_arrival_merged_into_a_held_lead_leaves_it_held(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """A later arrival with a held lead's email merges into it, and the lead stays held:
    an arrival is no person's decision, so the CRM still does not get it."""
    _, held = await _held_pair(api)
    again = await post_lead(
        api, {"first_name": "José", "email": "jfr@hotmail.com", "job_title": "CEO"}
    )
    assert (again["id"], again["outcome"]) == (held, "merged")
    await _drain(leads_app)
    assert len(crm.contacts) == 1  # José only
    async with _rt(leads_app).sessionmaker() as session:
        lead = await repo_lead.by_uid(session, held)
        assert lead is not None
        assert (lead.sync_status, lead.job_title) == ("held", "Gerente")
    listed = (await api.get("/v1/leads?held=true")).json()["items"]
    assert [item["id"] for item in listed] == [held]


async def test_duplicate_merges_the_held_lead_into_the_lead_it_resembles(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """`duplicate` folds the held lead into José as intake would (gaps filled, his own
    values kept, its email among his other contacts, its arrival his), re-scored and
    delivered; the held lead is a tombstone answering 410 `lead_merged`."""
    jose, held = await _held_pair(api)
    before = (await api.get(f"/v1/leads/{jose}")).json()

    response = await _review(api, held, {"decision": "duplicate"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == jose
    assert body["email"] == "jose@aceitunasdelsur.es"  # his own, kept
    assert (body["phone"], body["job_title"]) == ("+34954123456", "Gerente")  # filled
    assert body["custom_fields"] == {"interes": "aceite"}
    assert body["sources"] == ["api", "event"]
    assert body["score"] > before["score"]
    assert "returning" in {reason["code"] for reason in body["score_reasons"]}

    detail = (await api.get(f"/v1/leads/{jose}")).json()
    assert detail["arrivals"] == 2
    assert detail["other_emails"] == ["jfr@hotmail.com"]
    assert detail["duplicates"] == []
    assert detail["sync"]["status"] == "pending"
    assert detail["sync"]["version"] == before["sync"]["version"] + 1
    merged = detail["history"][0]
    assert merged["action"] == "merged"
    assert merged["changes"]["merged_lead"] == held
    assert {"phone", "job_title"} <= set(merged["changes"]["filled"])
    assert merged["changes"]["added"] == ["other_emails"]

    gone = _problem(await api.get(f"/v1/leads/{held}"), 410, "lead_merged")
    assert gone["merged_into"] == jose
    assert gone["detail"] == f"lead {held} was merged into lead {jose}"
    patch = await api.patch(f"/v1/leads/{held}", json={"job_title": "x"})
    assert _problem(patch, 410, "lead_merged")["merged_into"] == jose
    assert [i["id"] for i in (await api.get("/v1/leads")).json()["items"]] == [jose]

    async with _rt(leads_app).sessionmaker() as session:
        tombstone, target = (
            await repo_lead.by_uid(session, held),
            await repo_lead.by_uid(session, jose),
        )
        assert tombstone is not None
        assert target is not None
        assert tombstone.erased_at is not None
        assert (tombstone.sync_status, tombstone.possible_duplicate_of) == ("merged", target.id)
        assert (tombstone.email, tombstone.phone, tombstone.first_name) == (None, None, None)
        assert tombstone.custom_fields == {}
        keys = select(func.count()).where(LeadMatchKey.lead_id == tombstone.id)
        assert await session.scalar(keys) == 0
        sources = select(func.count()).where(LeadSource.lead_id == tombstone.id)
        assert await session.scalar(sources) == 0

    await _drain(leads_app)
    assert len(crm.contacts) == 1  # José, updated; the tombstone never goes
    [contact] = crm.contacts.values()
    assert "+34954123456" in contact.values()


async def test_a_merged_lead_keeps_no_history_details(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """As an erasure does, the merge empties what the held lead's history said (the fields
    a PATCH changed); only the line of the review itself says where it went."""
    jose, held = await _held_pair(api)
    patched = await api.patch(f"/v1/leads/{held}", json={"job_title": "Consejero"})
    assert patched.status_code == 200, patched.text

    assert (await _review(api, held, {"decision": "duplicate"})).status_code == 200

    async with _rt(leads_app).sessionmaker() as session:
        tombstone = await repo_lead.by_uid(session, held)
        assert tombstone is not None
        rows = await session.execute(
            select(LeadEvent.action, LeadEvent.changes).where(LeadEvent.lead_id == tombstone.id)
        )
        lines = sorted((action, changes) for action, changes in rows if changes)
    assert lines == [("reviewed", {"decision": "duplicate", "into": jose})]


async def test_a_merged_lead_is_no_candidate_for_later_arrivals(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """After the merge, an arrival with the held lead's email merges into José, and one
    that resembled the held lead most (its region) is held against José: nothing points
    at the tombstone, and this process keeps none of its match fields."""
    jose, held = await _held_pair(api, WITH_REGION)
    rt = _rt(leads_app)
    async with rt.sessionmaker() as session:
        held_row = await repo_lead.by_uid(session, held)
        assert held_row is not None
    assert held_row.id in rt.known
    assert (await _review(api, held, {"decision": "duplicate"})).status_code == 200
    assert held_row.id not in rt.known

    third = await post_lead(api, THIRD)
    assert (third["outcome"], third["duplicate"]["lead_id"]) == ("held_for_review", jose)
    again = await post_lead(api, {"email": "JFR@hotmail.com", "first_name": "José"})
    assert (again["outcome"], again["id"], again["duplicate"]["lead_id"]) == ("merged", jose, jose)


async def test_the_held_leads_other_contacts_follow_it(api: httpx.AsyncClient) -> None:
    """An email the held lead had before a PATCH changed it joins José's other contacts
    too, so an arrival with it finds José."""
    jose, held = await _held_pair(api)
    patched = await api.patch(f"/v1/leads/{held}", json={"email": "jose.fr@gmail.com"})
    assert patched.status_code == 200, patched.text
    assert (await api.get(f"/v1/leads/{held}")).json()["sync"]["status"] == "held"

    assert (await _review(api, held, {"decision": "duplicate"})).status_code == 200

    again = await post_lead(api, {"email": "jfr@hotmail.com", "first_name": "José"})
    assert (again["outcome"], again["id"]) == ("merged", jose)
    other = await post_lead(api, {"email": "jose.fr@gmail.com", "first_name": "José"})
    assert (other["outcome"], other["id"]) == ("merged", jose)


async def test_duplicate_into_another_lead_moves_the_holds_on_it(
    api: httpx.AsyncClient,
) -> None:
    """`into` names the lead to merge into (in any case); a lead held against the merged
    one is then held against that lead, and its own review merges into it by default."""
    jose, held = await _held_pair(api, WITH_REGION)
    third = await post_lead(api, THIRD)
    assert (third["outcome"], third["duplicate"]["lead_id"]) == ("held_for_review", held)
    other = (await post_lead(api, OTHER))["id"]

    response = await _review(api, held, {"decision": "duplicate", "into": other.upper()})

    assert response.status_code == 200, response.text
    assert response.json()["id"] == other
    gone = _problem(await api.get(f"/v1/leads/{held}"), 410, "lead_merged")
    assert gone["merged_into"] == other
    assert (await api.get(f"/v1/leads/{third['id']}")).json()["duplicate_of"] == other
    duplicates = (await api.get(f"/v1/leads/{other}")).json()["duplicates"]
    assert duplicates == [{"lead_id": third["id"], "status": "new", "held_for_review": True}]
    assert (await api.get(f"/v1/leads/{jose}")).json()["duplicates"] == []
    merged = await _review(api, third["id"], {"decision": "duplicate"})
    assert (merged.status_code, merged.json()["id"]) == (200, other)


async def test_merging_into_the_lead_held_against_it_releases_that_one(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A held lead merged into the lead held against it leaves that lead nothing to be
    held for: it is released and delivered."""
    _, held = await _held_pair(api, WITH_REGION)
    third = await post_lead(api, THIRD)
    assert third["duplicate"]["lead_id"] == held
    await _drain(leads_app)

    response = await _review(api, held, {"decision": "duplicate", "into": third["id"]})

    assert response.status_code == 200, response.text
    detail = (await api.get(f"/v1/leads/{third['id']}")).json()
    assert (detail["duplicate_of"], detail["sync"]["status"]) == (None, "pending")
    assert await _deliveries_waiting(leads_app) == 1


async def test_merging_into_a_lead_held_against_another_keeps_it_held(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A held lead merged into another held lead (held against a third) leaves that one
    held: it still waits for its own review, and nothing is delivered."""
    jose, held = await _held_pair(api)
    second = await post_lead(api, {**LOOKALIKE, "email": "jfr2@hotmail.com", "phone": None})
    assert second["duplicate"]["lead_id"] == jose
    await _drain(leads_app)

    response = await _review(api, held, {"decision": "duplicate", "into": second["id"]})

    assert response.status_code == 200, response.text
    detail = (await api.get(f"/v1/leads/{second['id']}")).json()
    assert (detail["duplicate_of"], detail["sync"]["status"]) == (jose, "held")
    assert detail["other_emails"] == ["jfr@hotmail.com"]
    assert await _deliveries_waiting(leads_app) == 0

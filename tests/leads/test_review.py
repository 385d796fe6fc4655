"""Reviewing a lead held as a possible duplicate, on both databases: `GET /v1/leads?held=`,
and `POST /v1/leads/{id}/review` deciding `distinct` (delivered) or `duplicate` (merged,
leaving a 410 tombstone)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from cauce.app import Resources, job_worker_for
from cauce.core.db import unit_of_work
from cauce.core.jobs.ports import JobFilter, JobStatus
from cauce.core.web.idempotency import IdempotencyRecord
from cauce.leads import repository as repo
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
        lead = await repo.by_uid(session, held)
        assert lead is not None
        assert (lead.sync_status, lead.possible_duplicate_of) == ("pending", None)
    detail = (await api.get(f"/v1/leads/{held}")).json()
    assert detail["duplicate_of"] is None
    event = detail["history"][0]
    assert (event["action"], event["changes"]) == ("reviewed", {"decision": "distinct"})
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
        lead = await repo.by_uid(session, held)
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
        tombstone, target = await repo.by_uid(session, held), await repo.by_uid(session, jose)
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
        tombstone = await repo.by_uid(session, held)
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
        held_row = await repo.by_uid(session, held)
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


async def test_only_a_held_lead_can_be_reviewed(api: httpx.AsyncClient) -> None:
    """A lead not held is 409 `lead_not_held`; an unknown one 404, an erased one 410."""
    jose, held = await _held_pair(api)
    refused = _problem(await _review(api, jose, {"decision": "distinct"}), 409, "lead_not_held")
    assert refused["detail"] == f"lead {jose} is not held for review"
    _problem(await _review(api, jose, {"decision": "duplicate"}), 409, "lead_not_held")

    assert (await _review(api, held, {"decision": "distinct"})).status_code == 200
    _problem(await _review(api, held, {"decision": "distinct"}), 409, "lead_not_held")
    _problem(await _review(api, held, {"decision": "duplicate"}), 409, "lead_not_held")

    unknown = "00000000-0000-4000-8000-000000000000"
    _problem(await _review(api, unknown, {"decision": "distinct"}), 404, "lead_not_found")
    assert (await api.delete(f"/v1/leads/{held}")).status_code == 204
    _problem(await _review(api, held, {"decision": "distinct"}), 410, "lead_erased")


async def test_a_merged_lead_cannot_be_reviewed_again(api: httpx.AsyncClient) -> None:
    """Reviewing the tombstone is its 410 `lead_merged`, naming the lead it went into."""
    jose, held = await _held_pair(api)
    assert (await _review(api, held, {"decision": "duplicate"})).status_code == 200
    for decision in ("distinct", "duplicate"):
        again = _problem(await _review(api, held, {"decision": decision}), 410, "lead_merged")
        assert again["merged_into"] == jose


async def test_bad_review_bodies_name_the_field(api: httpx.AsyncClient) -> None:
    """Invalid bodies are 422 with JSON pointers, and the lead stays held."""
    jose, held = await _held_pair(api)
    erased = (await post_lead(api, OTHER))["id"]
    assert (await api.delete(f"/v1/leads/{erased}")).status_code == 204
    unknown = "00000000-0000-4000-8000-000000000000"
    cases: list[tuple[Any, str, str]] = [
        ({"decision": "maybe"}, "/decision", "literal_error"),
        ({}, "/decision", "missing"),
        ({"decision": "duplicate", "force": True}, "/force", "extra_forbidden"),
        ({"decision": "duplicate", "into": "nope"}, "/into", "lead_id"),
        ({"decision": "duplicate", "into": 7}, "/into", "string_type"),
        ({"decision": "distinct", "into": jose}, "/into", "into_not_allowed"),
        ({"decision": "duplicate", "into": held}, "/into", "same_lead"),
        ({"decision": "duplicate", "into": unknown}, "/into", "lead_not_found"),
        ({"decision": "duplicate", "into": erased}, "/into", "lead_erased"),
        (["duplicate"], "", "model_type"),
    ]
    for body, pointer, kind in cases:
        problem = _problem(await _review(api, held, body), 422, "validation_failed")
        assert [(e["pointer"], e["type"]) for e in problem["errors"]] == [(pointer, kind)], body
    sent = await api.post(
        f"/v1/leads/{held}/review", content=b"decision=distinct", headers={"content-type": "text"}
    )
    _problem(sent, 415, "unsupported_media_type")
    detail = (await api.get(f"/v1/leads/{held}")).json()
    assert (detail["sync"]["status"], detail["duplicate_of"]) == ("held", jose)


async def test_a_review_replays_under_its_idempotency_key(api: httpx.AsyncClient) -> None:
    """The same key and body answers the first answer again; another body is refused."""
    jose, held = await _held_pair(api)
    key = {"Idempotency-Key": "review-1"}
    first = await _review(api, held, {"decision": "duplicate"}, **key)
    replay = await _review(api, held, {"decision": "duplicate"}, **key)
    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    reused = await _review(api, held, {"decision": "distinct"}, **key)
    _problem(reused, 422, "idempotency_key_reused")
    assert (await api.get(f"/v1/leads/{jose}")).json()["arrivals"] == 2


async def test_an_erasure_forgets_the_stored_review_answers_about_the_lead(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A stored review answer shows the lead, contact data included: erasing the lead
    deletes it, so no copy of the person stays behind a key for its 24 hours. A retry
    under the key then finds the lead gone (410) instead of replaying the person."""
    jose, held = await _held_pair(api)
    _, other_held = await _held_pair(api, THIRD)
    key = {"Idempotency-Key": "review-erased"}
    kept_key = {"Idempotency-Key": "review-kept"}
    assert (await _review(api, held, {"decision": "duplicate"}, **key)).status_code == 200
    kept = await _review(api, other_held, {"decision": "distinct"}, **kept_key)
    assert kept.status_code == 200
    async with unit_of_work(_rt(leads_app).sessionmaker) as session:
        bodies = (await session.scalars(select(IdempotencyRecord.body))).all()
    assert any(JOSE["email"].encode() in body for body in bodies)

    assert (await api.delete(f"/v1/leads/{jose}")).status_code == 204
    async with unit_of_work(_rt(leads_app).sessionmaker) as session:
        bodies = (await session.scalars(select(IdempotencyRecord.body))).all()
    assert not any(JOSE["email"].encode() in body for body in bodies)
    assert any(b"jfr3@hotmail.com" in body for body in bodies)  # another lead's answer stays
    retry = await _review(api, held, {"decision": "duplicate"}, **key)
    _problem(retry, 410, "lead_merged")
    replay = await _review(api, other_held, {"decision": "distinct"}, **kept_key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == kept.json()


async def test_an_erasure_forgets_review_answers_about_leads_merged_into_it(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """An answer shows a lead later merged into another: it follows the data, and the
    survivor's erasure deletes it too."""
    jose, held = await _held_pair(api, WITH_REGION)
    third = await post_lead(api, THIRD)
    assert third["duplicate"]["lead_id"] == held
    key = {"Idempotency-Key": "review-chain"}
    shown = await _review(api, third["id"], {"decision": "duplicate"}, **key)
    assert shown.json()["id"] == held
    assert shown.json()["email"] == "jfr@hotmail.com"  # the held lead's
    merged = await _review(api, held, {"decision": "duplicate"})
    assert merged.json()["id"] == jose

    assert (await api.delete(f"/v1/leads/{jose}")).status_code == 204
    async with unit_of_work(_rt(leads_app).sessionmaker) as session:
        bodies = (await session.scalars(select(IdempotencyRecord.body))).all()
    assert not any(b"jfr@hotmail.com" in body for body in bodies)


async def test_reviewing_needs_the_write_scope(leads_app: FastAPI, api: httpx.AsyncClient) -> None:
    """A read-only key gets 403 and the lead stays held."""
    _, held = await _held_pair(api)
    resources: Resources = leads_app.state.resources
    key = await resources.api_keys.create("reader", ["leads:read"])
    headers = {"Authorization": f"Bearer {key.token}"}
    response = await api.post(
        f"/v1/leads/{held}/review", json={"decision": "distinct"}, headers=headers
    )
    assert _problem(response, 403, "forbidden")["required_scope"] == "leads:write"
    assert (await api.get(f"/v1/leads/{held}")).json()["sync"]["status"] == "held"


async def test_a_review_waits_for_a_change_in_flight_and_sees_it(
    leads_app: FastAPI, api: httpx.AsyncClient, backend: str
) -> None:
    """A review locks the held lead: one waiting on a transaction that releases the hold
    meanwhile answers 409 `lead_not_held` once it commits, and merges nothing."""
    if backend == "sqlite":
        pytest.skip("SQLite runs one writing transaction at a time: nothing interleaves")
    jose, held = await _held_pair(api)
    rt = _rt(leads_app)
    async with unit_of_work(rt.sessionmaker) as session:
        lead = await repo.by_uid(session, held, for_update=True)
        assert lead is not None
        lead.sync_status = "pending"  # as a concurrent `distinct` would
        lead.possible_duplicate_of = None
        await session.flush()
        review = asyncio.create_task(_review(api, held, {"decision": "duplicate", "into": jose}))
        await _until_a_session_waits_on_a_lock(rt, review)
    response = await review
    _problem(response, 409, "lead_not_held")
    assert (await api.get(f"/v1/leads/{jose}")).json()["arrivals"] == 1


async def _until_a_session_waits_on_a_lock(rt: LeadsRuntime, task: asyncio.Task[Any]) -> None:
    """Return once another session of this database waits for a lock (the review)."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    for _ in range(2000):
        assert not task.done(), task.result().text
        async with rt.sessionmaker() as probe:
            if await probe.scalar(waiting):
                return
        await asyncio.sleep(0.005)  # polling a condition, bounded: not a timing assumption
    raise AssertionError("the review never waited for the lead's lock")

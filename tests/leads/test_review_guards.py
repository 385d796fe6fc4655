"""Guards around reviewing a held lead (`POST /v1/leads/{id}/review`), on both databases:
what it refuses (a lead not held, a merged tombstone, a bad body, a read-only key), its
replay under an idempotency key and the erasure of the answers it stored about a person,
and the lock that makes a review see a change in flight. The decisions themselves are in
test_review.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from cauce.app import Resources
from cauce.core.db import unit_of_work
from cauce.core.web.idempotency import IdempotencyRecord
from cauce.leads import repository_lead as repo_lead
from cauce.leads.service import LeadsRuntime
from tests.leads.api_client import JOSE, post_lead
from tests.leads.test_review import (
    OTHER,
    THIRD,
    WITH_REGION,
    _held_pair,
    _problem,
    _review,
    _rt,
)


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
        lead = await repo_lead.by_uid(session, held, for_update=True)
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

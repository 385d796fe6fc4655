"""Reviews and edits at the same moment on PostgreSQL (found by audits of the review
workflow and of PATCH, helper-106 and helper-107):

1. A review beside a PATCH of the held lead, or beside another review, deadlocked (503
   `database_unavailable`): a lead updated twice in one transaction has its
   `possible_duplicate_of` foreign key checked again, which takes `FOR KEY SHARE` on the
   lead it is held against, and `FOR UPDATE` held by the other transaction there made it
   wait, while the other waited for this lead. Leads are now locked `FOR NO KEY UPDATE`.
2. Two reviews under one `Idempotency-Key` at once both ran: the second failed on the
   first's merge (410 `lead_merged`) instead of a replay or 409
   `idempotency_key_in_use`.

SQLite runs one writing transaction at a time: nothing interleaves there.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from cauce.core.db import unit_of_work
from cauce.leads import repository as repo
from cauce.leads import repository_lead as repo_lead
from tests.leads.test_review import _held_pair, _review, _rt

pytestmark = pytest.mark.usefixtures("postgres_only")


@pytest.fixture
def postgres_only(backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite runs one writing transaction at a time: nothing interleaves")


async def test_a_locked_lead_leaves_the_check_of_a_lead_held_against_it_free(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    """A transaction holding José's lock does not stop another from updating the lead
    held against him twice (a PATCH's edit, then its score): with `FOR UPDATE` the
    second update's foreign-key check waited for José (here: until the lock timeout)."""
    jose, held = await _held_pair(api)
    rt = _rt(leads_app)
    async with unit_of_work(rt.sessionmaker) as holder:
        jose_row = await repo_lead.by_uid(holder, jose)
        assert jose_row is not None
        await repo.leads_by_id(holder, {jose_row.id})  # held until this block ends
        async with unit_of_work(rt.sessionmaker) as editor:
            await editor.execute(text("SET LOCAL lock_timeout = '3s'"))
            lead = await repo_lead.by_uid(editor, held, for_update=True)
            assert lead is not None
            assert lead.possible_duplicate_of == jose_row.id
            lead.job_title = "Directora comercial"
            await editor.flush()
            lead.score = (lead.score or 0) + 1
            await editor.flush()  # the row's second update in this transaction


async def test_a_review_and_a_patch_of_the_held_lead_never_deadlock(
    api: httpx.AsyncClient,
) -> None:
    """Five rounds of a review and a PATCH of the held lead at once: each answers what
    its turn found (the PATCH 200 or 410 once merged), never 503."""
    for round_ in range(5):
        jose, held = await _held_pair(api)
        review, patch = await asyncio.gather(
            _review(api, held, {"decision": "duplicate"}),
            api.patch(f"/v1/leads/{held}", json={"job_title": f"Directora {round_}"}),
        )
        assert review.status_code == 200, review.text
        assert patch.status_code in (200, 410), patch.text
        assert (await api.delete(f"/v1/leads/{jose}")).status_code == 204  # the next round's


async def test_two_reviews_under_one_key_at_once_replay_or_say_in_use(
    api: httpx.AsyncClient,
) -> None:
    """Three reviews sent at once under one key: one merges; each other is its replay or
    409 `idempotency_key_in_use` with Retry-After, never the merge's own 410; a retry
    then replays it."""
    _, held = await _held_pair(api)
    headers = {"Idempotency-Key": "review-race-1"}
    answers = await asyncio.gather(
        *(_review(api, held, {"decision": "duplicate"}, **headers) for _ in range(3))
    )
    firsts = [a for a in answers if a.status_code == 200 and "idempotent-replayed" not in a.headers]
    assert len(firsts) == 1, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "idempotency_key_in_use", answer.text
            assert int(answer.headers["retry-after"]) >= 1
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json() == firsts[0].json()
    retry = await _review(api, held, {"decision": "duplicate"}, **headers)
    assert retry.status_code == 200, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == firsts[0].json()

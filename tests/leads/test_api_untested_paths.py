"""Leads API behaviours no other test pinned down, through the HTTP API on both databases:
what each `GET /v1/leads` filter returns, intake scored by an activated learned model,
`Idempotency-Key` on `POST /v1/leads/batch`, and routing rules on the lead's source."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from cauce.app import Resources
from cauce.core.db import unit_of_work
from cauce.leads.learned import ModelStore, TrainingReport, publish, train
from cauce.leads.models import Lead
from cauce.leads.scoring import facts_of
from cauce.leads.synthetic import synthetic_leads, training_examples
from tests.conftest import SettingsFactory
from tests.leads.api_client import LEADS_APP, get_lead, post_lead, serve_app

# Points that tell the leads apart by what they send: company 30, job title 40.
SCORING_RULES = [
    {"name": "named_company", "field": "company", "points": 30, "reason": "names a company"},
    {"name": "job_title", "field": "job_title", "points": 40, "reason": "gives a job title"},
]
# Mexico first; then leads that first came from an event; the rest to Spain.
ROUTING: dict[str, Any] = {
    "routing_rules": [
        {"team": "mexico", "countries": ["MX"]},
        {"team": "events", "sources": ["event"]},
    ],
    "teams": {
        "mexico": [{"name": "Rosa"}],
        "events": [{"name": "Iñaki"}],
        "spain": [{"name": "Marta"}],
    },
    "default_team": "spain",
}


@pytest.fixture
async def routed(
    settings_factory: SettingsFactory,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with the scoring rules and routing above."""
    settings = settings_factory(**LEADS_APP, leads={"scoring_rules": SCORING_RULES, **ROUTING})
    async with serve_app(settings) as served:
        yield served


async def _ids(api: httpx.AsyncClient, **filters: Any) -> set[str]:
    """The ids `GET /v1/leads` returns for the filters (each once)."""
    response = await api.get("/v1/leads", params=filters)
    assert response.status_code == 200, (filters, response.text)
    ids = [item["id"] for item in response.json()["items"]]
    assert len(ids) == len(set(ids)), filters
    return set(ids)


def _utc(day: int) -> datetime:
    return datetime(2025, 1, day, 10, tzinfo=UTC)


async def _set_created_at(app: FastAPI, created: dict[str, datetime]) -> None:
    """Give leads known creation times: intake stamps them with the clock, and two leads
    posted one after the other may share a timestamp."""
    resources: Resources = app.state.resources
    async with unit_of_work(resources.db.sessionmaker) as session:
        for uid, when in created.items():
            await session.execute(update(Lead).where(Lead.uid == uid).values(created_at=when))


@pytest.fixture
async def five(routed: tuple[FastAPI, httpx.AsyncClient]) -> dict[str, str]:
    """Five leads, by letter, differing in status, source, owner, score and creation day:

    | lead | source   | country | score | owner | status    | created (2025-01, 10:00 UTC) |
    | a    | web_form | ES      | 70    | Marta | qualified | 1st (then merged from event) |
    | b    | event    | ES      | 30    | Iñaki | new       | 2nd                          |
    | c    | web_form | MX      | 40    | Rosa  | qualified | 3rd                          |
    | d    | api      | ES      | 0     | Marta | new       | 4th                          |
    | e    | referral | MX      | 70    | Rosa  | lost      | 5th                          |
    """
    app, api = routed
    sent: dict[str, dict[str, Any]] = {
        "a": {"source": "web_form", "country": "ES", "company": "Aceites SL", "job_title": "CEO"},
        "b": {"source": "event", "country": "ES", "company": "Bodegas SA"},
        "c": {"source": "web_form", "country": "MX", "job_title": "Gerente"},
        "d": {"country": "ES"},
        "e": {"source": "referral", "country": "MX", "company": "Maíz SA", "job_title": "CTO"},
    }
    uid: dict[str, str] = {}
    for letter, fields in sent.items():
        body = await post_lead(api, {"email": f"{letter}@empresa{letter}.com", **fields})
        assert body["outcome"] == "created"
        uid[letter] = body["id"]
    # a arrives again from an event: merged, its sources are both, its source stays.
    again = await post_lead(api, {"email": "a@empresaa.com", "source": "event"})
    assert (again["outcome"], again["id"]) == ("merged", uid["a"])
    for letter, status in (("a", "qualified"), ("c", "qualified"), ("e", "lost")):
        patched = await api.patch(f"/v1/leads/{uid[letter]}", json={"status": status})
        assert patched.status_code == 200, patched.text
    await _set_created_at(app, {uid[letter]: _utc(day) for day, letter in enumerate("abcde", 1)})
    expected = {
        "a": ("web_form", ["web_form", "event"], 70, "Marta", "qualified"),
        "b": ("event", ["event"], 30, "Iñaki", "new"),
        "c": ("web_form", ["web_form"], 40, "Rosa", "qualified"),
        "d": ("api", ["api"], 0, "Marta", "new"),
        "e": ("referral", ["referral"], 70, "Rosa", "lost"),
    }
    for letter, facts in expected.items():  # the premises of the filter tests below
        lead = await get_lead(api, uid[letter])
        assert (lead["source"], lead["sources"], lead["score"], lead["owner"], lead["status"]) == (
            facts
        ), letter
    return uid


async def test_status_source_and_owner_filters_return_exactly_their_leads(
    routed: tuple[FastAPI, httpx.AsyncClient], five: dict[str, str]
) -> None:
    """`status`, `source` and `owner` each keep only the leads equal to them, and combine
    with AND; `source` is where the lead first came from, so a lead merged from an event
    arrival (sources ["web_form", "event"]) is not found by `source=event`; `owner` is
    exact, case and accents included, never a prefix."""
    _, api = routed

    def leads(letters: str) -> set[str]:
        return {five[letter] for letter in letters}

    assert await _ids(api) == leads("abcde")
    assert await _ids(api, status="qualified") == leads("ac")
    assert await _ids(api, status="new") == leads("bd")
    assert await _ids(api, status="lost") == leads("e")
    assert await _ids(api, status="won") == set()
    assert await _ids(api, source="web_form") == leads("ac")
    assert await _ids(api, source="event") == leads("b")
    assert await _ids(api, source="api") == leads("d")
    assert await _ids(api, source="csv") == set()
    assert await _ids(api, owner="Marta") == leads("ad")
    assert await _ids(api, owner="Rosa") == leads("ce")
    assert await _ids(api, owner="Iñaki") == leads("b")
    for not_the_owner in ("marta", "MARTA", "Mar", "Marta ", "Inaki", "iñaki"):
        assert await _ids(api, owner=not_the_owner) == set(), not_the_owner
    assert await _ids(api, status="qualified", owner="Rosa") == leads("c")
    assert await _ids(api, status="qualified", source="web_form", owner="Marta") == leads("a")
    assert await _ids(api, source="event", status="qualified") == set()
    assert await _ids(api, owner="Rosa", country="MX", status="lost") == leads("e")


async def test_score_filters_are_inclusive_bounds_alone_and_together(
    routed: tuple[FastAPI, httpx.AsyncClient], five: dict[str, str]
) -> None:
    """`min_score` keeps scores at or above it, `max_score` at or below it, both together
    the range between (bounds included), and they combine with the other filters."""
    _, api = routed

    def leads(letters: str) -> set[str]:
        return {five[letter] for letter in letters}

    # Scores: a 70, b 30, c 40, d 0, e 70.
    assert await _ids(api, min_score=40) == leads("ace")
    assert await _ids(api, min_score=41) == leads("ae")
    assert await _ids(api, min_score=0) == leads("abcde")
    assert await _ids(api, min_score=71) == set()
    assert await _ids(api, max_score=30) == leads("bd")
    assert await _ids(api, max_score=29) == leads("d")
    assert await _ids(api, max_score=0) == leads("d")
    assert await _ids(api, min_score=30, max_score=40) == leads("bc")
    assert await _ids(api, min_score=31, max_score=69) == leads("c")
    assert await _ids(api, min_score=70, max_score=70) == leads("ae")
    assert await _ids(api, min_score=41, max_score=69) == set()
    assert await _ids(api, min_score=50, source="web_form") == leads("a")
    assert await _ids(api, max_score=50, owner="Rosa") == leads("c")
    assert await _ids(api, min_score=30, max_score=70, status="new") == leads("b")


async def test_created_filters_take_after_inclusive_and_before_exclusive(
    routed: tuple[FastAPI, httpx.AsyncClient], five: dict[str, str]
) -> None:
    """`created_after` keeps leads created at or after it, `created_before` those created
    strictly before it; a date is its midnight UTC, a time without an offset is UTC and
    one with an offset is converted; both together are the interval between."""
    _, api = routed

    def leads(letters: str) -> set[str]:
        return {five[letter] for letter in letters}

    # Created on the 1st (a) to the 5th (e) of January 2025, at 10:00 UTC.
    assert await _ids(api, created_after="2025-01-03T10:00:00Z") == leads("cde")
    assert await _ids(api, created_after="2025-01-03T10:00:01Z") == leads("de")
    assert await _ids(api, created_before="2025-01-03T10:00:00Z") == leads("ab")
    assert await _ids(api, created_before="2025-01-03T10:00:01Z") == leads("abc")
    assert await _ids(api, created_after="2025-01-03") == leads("cde")
    assert await _ids(api, created_before="2025-01-03") == leads("ab")
    assert await _ids(api, created_after="2025-01-03T10:00:00") == leads("cde")
    assert await _ids(api, created_after="2025-01-03T12:00:00+02:00") == leads("cde")
    assert await _ids(api, created_after="2025-01-03T06:00:00-05:00") == leads("de")
    between = {"created_after": "2025-01-02", "created_before": "2025-01-04T10:00:00Z"}
    assert await _ids(api, **between) == leads("bc")
    assert await _ids(api, **between, status="qualified") == leads("c")
    assert await _ids(api, created_after="2025-01-06") == set()
    assert await _ids(api, created_before="2025-01-01") == set()


# -- intake scored by a learned model ---------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> TrainingReport:
    """A model trained on synthetic leads, confidently better than the points model (the
    seed and size test_learned_activation.py shows activate)."""
    return train(training_examples(synthetic_leads(800, seed=1)), seed=1)


async def test_a_fresh_app_scores_intake_with_the_activated_learned_model(
    settings_factory: SettingsFactory, api: httpx.AsyncClient, trained: TrainingReport
) -> None:
    """Once a model is activated, an app started after scores each new lead with it
    (`score_model` learned-v1, the model's own score and feature reasons), so a company
    email and an executive title outscore free mail; the app already running keeps the
    points model until restarted, as the docs say."""
    settings = settings_factory(**LEADS_APP)  # `api`'s settings: the same database and data_dir
    store = ModelStore.for_data_dir(settings.data_dir)
    assert publish(trained, store).activated
    model = store.load_active()
    assert model is not None
    assert model.name == "learned-v1"

    strong_in = {
        "email": "lucia.ceo@olivaresdeljaen.es",
        "company": "Olivares del Jaén SL",
        "job_title": "CEO",
        "country": "ES",
        "source": "web_form",
        "utm": {"source": "google", "medium": "cpc"},
    }
    weak_in = {"email": "pepe.perez@gmail.com", "country": "ES", "source": "web_form"}
    async with serve_app(settings) as (_, fresh):
        strong = await post_lead(fresh, strong_in)
        weak = await post_lead(fresh, weak_in)
        strong_detail = await get_lead(fresh, strong["id"])
        weak_detail = await get_lead(fresh, weak["id"])

    assert strong_detail["score_model"] == weak_detail["score_model"] == "learned-v1"
    for answer, sent, free in ((strong, strong_in, False), (weak, weak_in, True)):
        expected = model.score(
            facts_of({**sent, "email_free": free, "email_disposable": False}, arrivals=1)
        )
        assert answer["score"] == expected.value
        assert [(r["code"], r["points"]) for r in answer["score_reasons"]] == [
            (r.rule, r.points) for r in expected.reasons
        ]
        assert {r["code"] for r in answer["score_reasons"]} <= set(model.feature_names)
    strong_codes = {r["code"] for r in strong["score_reasons"]}
    assert {"email_company", "seniority=executive"} <= strong_codes
    weak_codes = {r["code"] for r in weak["score_reasons"]}
    assert "email_company" not in weak_codes
    assert not any(code.startswith("seniority=") for code in weak_codes)
    assert strong["score"] > weak["score"]
    assert strong_detail["score_reasons"] == strong["score_reasons"]
    # The app started before the activation still scores with points.
    later = await post_lead(api, {**strong_in, "email": "later@olivaresdeljaen.es"})
    assert (await get_lead(api, later["id"]))["score_model"] == "points"


# -- Idempotency-Key on the batch -------------------------------------------------------------


async def _count(api: httpx.AsyncClient) -> int:
    page = (await api.get("/v1/leads", params={"limit": 200})).json()
    return len(page["items"])


async def test_batch_idempotency_key_replays_and_refuses_another_body(
    api: httpx.AsyncClient,
) -> None:
    """`POST /v1/leads/batch` with a key already used for the same body answers the
    first answer again (marked replayed) without taking the leads in again; the same key
    with another body is 422 `idempotency_key_reused`, and nothing is stored."""
    batch = {
        "items": [
            {"email": "uno@empresa.es", "first_name": "Ana"},
            {"email": "not an email"},
            {"email": "dos@empresa.es", "company": "Dos SL"},
        ]
    }
    headers = {"Idempotency-Key": "batch-7"}
    first = await api.post("/v1/leads/batch", json=batch, headers=headers)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert [item["outcome"] for item in first.json()["items"]] == ["created", "rejected", "created"]
    assert await _count(api) == 2

    replay = await api.post("/v1/leads/batch", json=batch, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()  # "created" twice: the stored answer, not a re-run
    assert await _count(api) == 2

    other = {"items": [*batch["items"], {"email": "tres@empresa.es"}]}
    refused = await api.post("/v1/leads/batch", json=other, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "idempotency_key_reused"
    assert await _count(api) == 2
    assert await _ids(api, q="tres") == set()

    # Without the key the same batch is taken in again: both leads now merge.
    rerun = await api.post("/v1/leads/batch", json=batch)
    assert [item["outcome"] for item in rerun.json()["items"]] == ["merged", "rejected", "merged"]
    assert "Idempotent-Replayed" not in rerun.headers
    assert await _count(api) == 2


# -- routing on the lead's source -------------------------------------------------------------


async def test_a_routing_rule_on_sources_takes_only_leads_from_that_source(
    routed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """A rule with `sources = ["event"]` gives a lead from an event its team and owner;
    leads from other sources go on to the default team; an earlier rule still wins; and a
    lead keeps its team when a later arrival from an event merges into it."""
    _, api = routed

    placed_ids: list[str] = []

    async def placed(lead: dict[str, Any]) -> tuple[str, str | None, str | None]:
        answer = await post_lead(api, lead)
        placed_ids.append(answer["id"])
        detail = await get_lead(api, answer["id"])
        assert detail["owner"] == answer["owner"]
        return answer["outcome"], detail["team"], detail["owner"]

    event = {"email": "feria@empresa.es", "source": "event", "country": "ES"}
    assert await placed(event) == ("created", "events", "Iñaki")
    for source in ("web_form", "api", "referral", "chat"):
        lead = {"email": f"{source}@empresa.es", "source": source, "country": "ES"}
        assert await placed(lead) == ("created", "spain", "Marta"), source
    assert await placed({"email": "sin-fuente@empresa.es"}) == ("created", "spain", "Marta")
    mexican = {"email": "feria@empresa.mx", "source": "event", "country": "MX"}
    assert await placed(mexican) == ("created", "mexico", "Rosa")
    # The web_form lead arrives again from an event: merged, still Spain's and Marta's.
    back = {"email": "web_form@empresa.es", "source": "event"}
    assert await placed(back) == ("merged", "spain", "Marta")
    assert await _ids(api, owner="Iñaki") == {placed_ids[0]}

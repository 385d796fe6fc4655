"""A merge keeps a lead's sales state, and a held lead waits for its review before it goes
to anyone, on both databases (found by an audit of scoring and routing, helper-114):

1. An arrival's (or a reviewed duplicate's) status was never merged: a CRM export's
   `won` row for a lead still `new` here counted as merged and left it `new`, and a held
   lead a salesperson had marked `won` lost it when a review merged it. The status is
   now taken when it has come further (new < working < qualified < won/lost/junk), the
   owner with it; a status or owner not taken is listed as `kept`. The line gives the
   values that moved (status, owner, score), as a PATCH's does.
2. A lead held as a possible duplicate was routed at once: a second salesperson got the
   person the first already had, and a review merging it away lost that turn of the
   rotation. It is routed when a review tells it apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import SettingsFactory
from tests.leads.api_client import JOSE, LEADS_APP, get_lead, post_lead, serve_app
from tests.leads.test_review import LOOKALIKE, THIRD, WITH_REGION, _review

ROTATION = ["Marta", "Pablo", "Rosa"]
ROUTING: dict[str, Any] = {
    "teams": {"spain": [{"name": name} for name in ROTATION]},
    "default_team": "spain",
}


@pytest.fixture
async def routed(
    settings_factory: SettingsFactory,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with one team of three taking turns."""
    async with serve_app(settings_factory(**LEADS_APP, leads=ROUTING)) as served:
        yield served


async def test_an_arrival_further_on_brings_its_status_and_owner(
    routed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, api = routed
    jose = await post_lead(api, JOSE)
    assert (jose["owner"], (await get_lead(api, jose["id"]))["status"]) == ("Marta", "new")
    # A CRM export's row: the same email, won by someone else.
    won = await post_lead(api, {"email": JOSE["email"], "status": "won", "owner": "Iñaki"})
    assert (won["outcome"], won["id"]) == ("merged", jose["id"])
    assert set(won["duplicate"]["merged_fields"]) >= {"status", "owner"}
    lead = await get_lead(api, jose["id"])
    assert (lead["status"], lead["owner"]) == ("won", "Iñaki")
    line = lead["history"][0]
    assert line["action"] == "merged"
    assert "status" in line["changes"]["overwritten"]
    assert line["changes"]["values"]["status"] == {"from": "new", "to": "won"}
    assert line["changes"]["values"]["owner"] == {"from": "Marta", "to": "Iñaki"}
    listed = (await api.get("/v1/leads", params={"status": "won"})).json()["items"]
    assert [item["id"] for item in listed] == [jose["id"]]


async def test_an_arrival_going_back_or_sideways_keeps_the_stored_state(
    routed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, api = routed
    jose = await post_lead(api, {**JOSE, "status": "lost"})
    for status, owner in (("working", "Iñaki"), ("won", None), ("new", "Iñaki")):
        body: dict[str, Any] = {"email": JOSE["email"], "status": status}
        if owner:
            body["owner"] = owner
        merged = await post_lead(api, body)
        assert merged["outcome"] == "merged"
        assert not {"status", "owner"} & set(merged["duplicate"]["merged_fields"])
    lead = await get_lead(api, jose["id"])
    assert (lead["status"], lead["owner"]) == ("lost", "Marta")
    lines = [h["changes"] for h in lead["history"] if h["action"] == "merged"]
    # newest first: `new` says nothing of a status; the others differ and stay out
    assert [("status" in c["kept"], "owner" in c["kept"]) for c in lines] == [
        (False, True),
        (True, False),
        (True, True),
    ]
    assert all("values" not in c or "status" not in c["values"] for c in lines)


async def test_an_owner_fills_a_lead_with_none(settings_factory: SettingsFactory) -> None:
    async with serve_app(settings_factory(**LEADS_APP)) as (_, api):  # no teams: no owners
        jose = await post_lead(api, JOSE)
        assert jose["owner"] is None
        merged = await post_lead(api, {"email": JOSE["email"], "owner": "Iñaki"})
        assert "owner" in merged["duplicate"]["merged_fields"]
        lead = await get_lead(api, jose["id"])
        assert (lead["status"], lead["owner"]) == ("new", "Iñaki")
        assert lead["history"][0]["changes"]["values"]["owner"] == {"from": None, "to": "Iñaki"}


async def test_a_batch_merges_status_and_owner_as_items_one_by_one(
    routed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, api = routed
    items = [
        {**JOSE},
        {"email": JOSE["email"], "owner": "Iñaki"},  # not further on: Marta stays
        {"email": "ana@bodegas.es"},
        {"email": "ana@bodegas.es", "status": "qualified", "owner": "Iñaki"},  # further on
        {"email": "luis@bodegas.es"},
    ]
    response = await api.post("/v1/leads/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["items"]
    outcomes = [(r["outcome"], r["owner"]) for r in results]
    # Each item answers as it would sent on its own: Ana is Pablo's when created, then
    # Iñaki's; her turn is taken all the same, so Luis is Rosa's.
    assert outcomes == [
        ("created", "Marta"),
        ("merged", "Marta"),
        ("created", "Pablo"),
        ("merged", "Iñaki"),
        ("created", "Rosa"),
    ]
    ana = await get_lead(api, results[2]["id"])
    assert (ana["status"], ana["owner"]) == ("qualified", "Iñaki")
    assert (await get_lead(api, results[0]["id"]))["owner"] == "Marta"


async def test_a_held_lead_is_routed_only_when_told_apart(
    routed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, api = routed
    jose = await post_lead(api, JOSE)
    held = await post_lead(api, LOOKALIKE)
    assert held["outcome"] == "held_for_review"
    assert held["owner"] is None
    assert (await get_lead(api, held["id"]))["team"] == "spain"
    ana = await post_lead(api, {"email": "ana@bodegas.es"})
    assert ana["owner"] == "Pablo"  # the held lead took no turn
    # Asking routing again (`"owner": null`) takes no turn while it is held either.
    again = await api.patch(f"/v1/leads/{held['id']}", json={"owner": None})
    assert again.status_code == 200, again.text
    assert again.json()["owner"] is None
    assert (await _review(api, held["id"], {"decision": "distinct"})).status_code == 200
    lead = await get_lead(api, held["id"])
    assert (lead["team"], lead["owner"]) == ("spain", "Rosa")
    line = lead["history"][0]
    assert line["action"] == "reviewed"
    assert line["changes"]["values"] == {"owner": {"from": None, "to": "Rosa"}}
    assert (await get_lead(api, jose["id"]))["owner"] == "Marta"


async def test_a_reviewed_duplicate_brings_its_worked_status(
    routed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, api = routed
    jose = await post_lead(api, JOSE)
    held = await post_lead(api, LOOKALIKE)
    assert held["outcome"] == "held_for_review"
    # A salesperson works the held lead before the review: takes it and wins it.
    patched = await api.patch(f"/v1/leads/{held['id']}", json={"status": "won", "owner": "Iñaki"})
    assert patched.status_code == 200, patched.text
    assert (await _review(api, held["id"], {"decision": "duplicate"})).status_code == 200
    lead = await get_lead(api, jose["id"])
    assert (lead["status"], lead["owner"]) == ("won", "Iñaki")
    line = lead["history"][0]
    assert (line["action"], line["changes"]["decision"]) == ("merged", "duplicate")
    assert line["changes"]["values"]["status"] == {"from": "new", "to": "won"}
    listed = (await api.get("/v1/leads", params={"status": "won"})).json()["items"]
    assert [item["id"] for item in listed] == [jose["id"]]


async def test_a_held_lead_released_by_a_merge_into_it_is_routed(
    routed: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The lookalike merged into the third lead, which was held against it: nothing is
    left to hold the third for, and it goes to the next turn."""
    _, api = routed
    await post_lead(api, JOSE)  # Marta's
    held = await post_lead(api, WITH_REGION)
    third = await post_lead(api, THIRD)
    assert (third["outcome"], third["duplicate"]["lead_id"]) == ("held_for_review", held["id"])
    assert (held["owner"], third["owner"]) == (None, None)
    body = {"decision": "duplicate", "into": third["id"]}
    assert (await _review(api, held["id"], body)).status_code == 200
    lead = await get_lead(api, third["id"])
    assert (lead["sync"]["status"], lead["owner"]) == ("pending", "Pablo")
    line = lead["history"][0]
    assert line["changes"]["values"]["owner"] == {"from": None, "to": "Pablo"}

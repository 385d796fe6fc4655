"""Fixes from a black-box audit of a lead's life after intake (search, change, review).

Each test names what the audit saw before its fix.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.leads.api_client import JOSE, client_with, post_lead


def _forbidden(response: httpx.Response, scope: str) -> None:
    assert response.status_code == 403, response.text
    body: dict[str, Any] = response.json()
    assert (body["code"], body["required_scope"]) == ("forbidden", scope)


async def _held_against_jose(api: httpx.AsyncClient) -> dict[str, Any]:
    """The docs' possible duplicate of José (same name and city, another email, no
    company): stored and held for review against him."""
    held = await post_lead(
        api,
        {
            "first_name": "José",
            "last_name": "Fernández Ruiz",
            "city": "Sevilla",
            "email": "jfr@hotmail.com",
        },
    )
    assert held["outcome"] == "held_for_review"
    return held


async def test_a_write_only_key_is_not_shown_a_lead_by_changing_or_reviewing_it(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Before: a web form's `leads:write` key could read anyone's lead (name, email,
    phone, consent) by `PATCH /v1/leads/{id}` with `{}`, whose answer is the lead, and the
    merged lead by a review. Both now need `leads:read` too; nothing changes on a 403."""
    jose = await post_lead(api, JOSE)
    held = await _held_against_jose(api)
    before = (await api.get(f"/v1/leads/{jose['id']}")).json()
    async with await client_with(leads_app, ["leads:write"]) as writer:
        _forbidden(await writer.patch(f"/v1/leads/{jose['id']}", json={}), "leads:read")
        changed = await writer.patch(f"/v1/leads/{jose['id']}", json={"city": "Cádiz"})
        _forbidden(changed, "leads:read")
        review = await writer.post(f"/v1/leads/{held['id']}/review", json={"decision": "duplicate"})
        _forbidden(review, "leads:read")
        # Intake itself still needs only `leads:write` (and shows nothing of stored leads).
        created = await writer.post("/v1/leads", json={"email": "otra@ejemplo.es"})
        assert (created.status_code, created.json()) == (202, {"accepted": True}), created.text
    after = (await api.get(f"/v1/leads/{jose['id']}")).json()
    assert after == before
    assert (await api.get(f"/v1/leads/{held['id']}")).json()["sync"]["status"] == "held"
    async with await client_with(leads_app, ["leads:read", "leads:write"]) as both:
        changed = await both.patch(f"/v1/leads/{jose['id']}", json={"city": "Cádiz"})
        assert (changed.status_code, changed.json()["city"]) == (200, "Cádiz")


async def test_the_list_and_a_change_show_what_the_lead_shows(api: httpx.AsyncClient) -> None:
    """Before: `GET /v1/leads` and a PATCH's answer showed `sources` as the first source
    only and `duplicate_of` as null for every held lead (a reviewer working from
    `?held=true` saw no link); `GET /v1/leads/{id}` showed both right."""
    jose = await post_lead(api, {**JOSE, "source": "web_form"})
    again = await post_lead(api, {**JOSE, "source": "api", "phone": "+34 954 12 34 56"})
    assert again["id"] == jose["id"]
    held = await _held_against_jose(api)

    async def listed(**params: str) -> dict[str, dict[str, Any]]:
        response = await api.get("/v1/leads", params=params)
        assert response.status_code == 200, response.text
        return {item["id"]: item for item in response.json()["items"]}

    shown = await listed()
    detail = {uid: (await api.get(f"/v1/leads/{uid}")).json() for uid in shown}
    for uid, item in shown.items():
        assert (item["sources"], item["duplicate_of"]) == (
            detail[uid]["sources"],
            detail[uid]["duplicate_of"],
        )
    assert shown[jose["id"]]["sources"] == ["web_form", "api"]
    assert shown[held["id"]]["duplicate_of"] == jose["id"]
    assert (await listed(held="true"))[held["id"]]["duplicate_of"] == jose["id"]
    changed = await api.patch(f"/v1/leads/{jose['id']}", json={"job_title": "Gerente"})
    assert changed.json()["sources"] == ["web_form", "api"]
    changed = await api.patch(f"/v1/leads/{held['id']}", json={"job_title": "Gerente"})
    assert changed.json()["duplicate_of"] == jose["id"]


async def test_a_wrong_method_names_every_method_the_path_takes(api: httpx.AsyncClient) -> None:
    """Before: `PUT /v1/leads/{id}` answered 405 with `Allow: GET` (Starlette names only
    the first matching route's methods), though PATCH and DELETE work there too."""
    lead = await post_lead(api, JOSE)
    response = await api.put(f"/v1/leads/{lead['id']}", json={})
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed
    assert "PUT" not in allowed
    body = response.json()
    assert (body["code"], body["detail"].startswith("PUT is not allowed here")) == (
        "method_not_allowed",
        True,
    )


async def test_history_says_how_long_it_is_and_writes_times_as_the_lead_does(
    api: httpx.AsyncClient,
) -> None:
    """Before: after 160 changes `history` held 100 lines and nothing said more existed;
    its times ended `+00:00` where `created_at` ends `Z`."""
    lead = await post_lead(api, {"email": "historia@ejemplo.es"})
    for n in range(104):
        changed = await api.patch(f"/v1/leads/{lead['id']}", json={"job_title": f"Cargo {n}"})
        assert changed.status_code == 200, changed.text
    shown = (await api.get(f"/v1/leads/{lead['id']}")).json()
    assert (len(shown["history"]), shown["history_total"]) == (100, 105)
    assert shown["history"][0]["at"].endswith("Z")
    assert shown["created_at"].endswith("Z")
    other = await post_lead(api, {"email": "corta@ejemplo.es"})
    short = (await api.get(f"/v1/leads/{other['id']}")).json()
    assert (len(short["history"]), short["history_total"]) == (1, 1)


async def test_q_reads_past_invisible_characters_and_spaces_alone_are_no_query(
    api: httpx.AsyncClient,
) -> None:
    """Before: `ma\\u00adria` (a soft hyphen) matched as two words, and `q` of spaces
    alone found nothing while an empty `q` found everything."""
    maria = await post_lead(api, {"email": "m@ejemplo.es", "first_name": "María"})
    await post_lead(api, {"email": "otro@ejemplo.es", "first_name": "Luis"})

    async def found(q: str) -> list[str]:
        response = await api.get("/v1/leads", params={"q": q})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await found("ma\u00adria") == [maria["id"]]
    assert await found("mar\u200bia") == [maria["id"]]
    assert len(await found("   ")) == len(await found("")) == 2


async def test_clearing_both_contacts_points_at_both(api: httpx.AsyncClient) -> None:
    """Before: a PATCH leaving a lead without email and phone pointed only at `/email`;
    intake points at both, as the docs say."""
    lead = await post_lead(api, {"phone": "+34 612 345 678"})
    response = await api.patch(f"/v1/leads/{lead['id']}", json={"phone": None})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {(e["pointer"], e["type"]) for e in errors} == {
        ("/email", "contact_required"),
        ("/phone", "contact_required"),
    }


async def test_a_match_is_named_only_by_kinds_that_happen(api: httpx.AsyncClient) -> None:
    """The answer's `duplicate.match` listed `external_id`, which no match ever gives."""
    spec = (await api.get("/openapi.json")).json()
    info = spec["components"]["schemas"]["DuplicateInfo"]["properties"]["match"]
    assert set(info["enum"]) == {"email", "phone", "fuzzy"}

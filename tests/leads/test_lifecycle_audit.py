"""Fixes from a black-box audit of a lead's life after intake (search, change, review).

Each test names what the audit saw before its fix.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from cauce.app import Resources
from tests.leads.api_client import JOSE, post_lead


async def _client_with(leads_app: FastAPI, scopes: list[str]) -> httpx.AsyncClient:
    resources: Resources = leads_app.state.resources
    key = await resources.api_keys.create("narrow", scopes)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=leads_app),
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    )


def _forbidden(response: httpx.Response, scope: str) -> None:
    assert response.status_code == 403, response.text
    body: dict[str, Any] = response.json()
    assert (body["code"], body["required_scope"]) == ("forbidden", scope)


async def test_a_write_only_key_is_not_shown_a_lead_by_changing_or_reviewing_it(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Before: a web form's `leads:write` key could read anyone's lead (name, email,
    phone, consent) by `PATCH /v1/leads/{id}` with `{}`, whose answer is the lead, and the
    merged lead by a review. Both now need `leads:read` too; nothing changes on a 403."""
    jose = await post_lead(api, JOSE)
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
    before = (await api.get(f"/v1/leads/{jose['id']}")).json()
    async with await _client_with(leads_app, ["leads:write"]) as writer:
        _forbidden(await writer.patch(f"/v1/leads/{jose['id']}", json={}), "leads:read")
        changed = await writer.patch(f"/v1/leads/{jose['id']}", json={"city": "Cádiz"})
        _forbidden(changed, "leads:read")
        review = await writer.post(f"/v1/leads/{held['id']}/review", json={"decision": "duplicate"})
        _forbidden(review, "leads:read")
        # Intake itself still needs only `leads:write`.
        created = await writer.post("/v1/leads", json={"email": "otra@ejemplo.es"})
        assert created.status_code == 201, created.text
    after = (await api.get(f"/v1/leads/{jose['id']}")).json()
    assert after == before
    assert (await api.get(f"/v1/leads/{held['id']}")).json()["sync"]["status"] == "held"
    async with await _client_with(leads_app, ["leads:read", "leads:write"]) as both:
        changed = await both.patch(f"/v1/leads/{jose['id']}", json={"city": "Cádiz"})
        assert (changed.status_code, changed.json()["city"]) == (200, "Cádiz")


async def test_the_list_and_a_change_show_what_the_lead_shows(api: httpx.AsyncClient) -> None:
    """Before: `GET /v1/leads` and a PATCH's answer showed `sources` as the first source
    only and `duplicate_of` as null for every held lead (a reviewer working from
    `?held=true` saw no link); `GET /v1/leads/{id}` showed both right."""
    jose = await post_lead(api, {**JOSE, "source": "web_form"})
    again = await post_lead(api, {**JOSE, "source": "api", "phone": "+34 954 12 34 56"})
    assert again["id"] == jose["id"]
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

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

"""Posting leads to the app in the leads tests."""

from __future__ import annotations

from typing import Any

import httpx

# docs/leads.md's José (its "De-duplication" examples): the lead several tests match
# their arrivals against.
JOSE: dict[str, Any] = {
    "first_name": "José",
    "last_name": "Fernández Ruiz",
    "company": "Aceitunas del Sur S.A.",
    "city": "Sevilla",
    "country": "ES",
    "email": "jose@aceitunasdelsur.es",
}


async def post_lead(api: httpx.AsyncClient, lead: dict[str, Any]) -> dict[str, Any]:
    """`POST /v1/leads`; its answer, which must be 200 (merged) or 201."""
    response = await api.post("/v1/leads", json=lead)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body

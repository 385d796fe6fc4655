"""Posting leads to the app in the leads tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from cauce.app import Resources, create_app
from cauce.core.config import Settings
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm

# `leads_app`'s settings (tests/leads/conftest.py): HubSpot configured (at the port, never
# reached) and no background worker; for another app on the same database and data_dir.
LEADS_APP: dict[str, Any] = {
    "crm": {"provider": "hubspot", "token": "t"},
    "jobs": {"embedded_worker": False},
}

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


async def get_lead(api: httpx.AsyncClient, uid: str) -> dict[str, Any]:
    """`GET /v1/leads/{uid}`; its answer, which must be 200."""
    response = await api.get(f"/v1/leads/{uid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def serve_app(
    settings: Settings, scopes: tuple[str, ...] = ("leads:read", "leads:write", "leads:admin")
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app started on `settings` (HubSpot at an in-memory port) and a client with
    `scopes`."""
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app), await client_with(app, scopes) as client:
        yield app, client


async def client_with(app: FastAPI, scopes: Sequence[str], name: str = "t") -> httpx.AsyncClient:
    """A client of `app` (started) with a new API key of these `scopes`."""
    resources: Resources = app.state.resources
    key = await resources.api_keys.create(name, list(scopes))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    )


@asynccontextmanager
async def leads_api(
    settings_factory: SettingsFactory, **leads: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """`serve_app` with these `leads` settings, HubSpot configured and no background
    worker; the client has the leads:read and leads:write scopes."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}, leads=leads
    )
    async with serve_app(settings, ("leads:read", "leads:write")) as served:
        yield served

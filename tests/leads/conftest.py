"""Fixtures shared by the leads tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from cauce.app import Resources


@pytest.fixture
async def api(leads_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's `leads_app` with every leads scope."""
    resources: Resources = leads_app.state.resources
    key = await resources.api_keys.create("t", ["leads:read", "leads:write", "leads:admin"])
    transport = httpx.ASGITransport(app=leads_app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    ) as client:
        yield client

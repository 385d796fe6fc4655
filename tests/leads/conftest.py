"""Fixtures shared by the leads tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.jobs.factory import JobWorker
from cauce.leads.imports import IMPORT_QUEUE
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm


@pytest.fixture
def crm() -> MemoryCrm:
    """The CRM behind `leads_app` (HubSpot's port, in memory): tests count its contacts."""
    return MemoryCrm()


@pytest.fixture
async def leads_app(settings_factory: SettingsFactory, crm: MemoryCrm) -> AsyncIterator[FastAPI]:
    """The app with HubSpot configured (at the port, never reached: `crm`) and no
    background worker: each test runs the jobs it needs. Modules needing other settings
    define their own."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}
    )
    app = create_app(settings, crm=crm)
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def worker(leads_app: FastAPI) -> AsyncIterator[JobWorker]:
    """A worker for the import queue (started on PostgreSQL, run by hand on SQLite)."""
    resources: Resources = leads_app.state.resources
    imports_worker = job_worker_for(resources, queues=[IMPORT_QUEUE])
    if resources.db.dialect != "sqlite":
        await imports_worker.start()
    yield imports_worker
    await imports_worker.stop()


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

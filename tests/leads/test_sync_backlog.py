"""The CRM backlog in `/metrics`: live leads not in the CRM by sync status, and the age of
the oldest pending change (the job queue's gauges show one postponed job however many
leads wait behind it). On both databases, through the real app."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import update

from cauce.app import create_app, job_worker_for
from cauce.core.db.base import utcnow
from cauce.leads.models import Lead
from cauce.leads.service import LeadsRuntime
from tests.conftest import SettingsFactory
from tests.leads.test_review import _held_pair


async def _gauges(api: httpx.AsyncClient) -> dict[str, float]:
    text = (await api.get("/metrics")).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(
            r'cauce_leads_sync_(backlog\{status="(\w+)"\}|oldest_pending_seconds) (\S+)', line
        )
        if m:
            found[m.group(2) or "oldest"] = float(m.group(3))
    return found


async def test_the_backlog_counts_leads_waiting_for_the_crm(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Two leads accepted and not delivered are pending; a possible duplicate is held;
    the oldest pending change's age grows with time; delivered, nothing is pending."""
    for email in ("uno@empresa.es", "dos@empresa.es"):
        assert (await api.post("/v1/leads", json={"email": email})).status_code == 201
    await _held_pair(api)  # José, pending, and his lookalike, held
    gauges = await _gauges(api)
    assert (gauges["pending"], gauges["held"], gauges["failed"]) == (3, 1, 0)
    assert 0 <= gauges["oldest"] < 60
    rt: LeadsRuntime = leads_app.state.leads
    async with rt.sessionmaker() as session, session.begin():
        await session.execute(
            update(Lead)
            .where(Lead.email == "uno@empresa.es")
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
    assert 3600 <= (await _gauges(api))["oldest"] < 3660
    await job_worker_for(leads_app.state.resources).run_until_idle(30)
    gauges = await _gauges(api)
    assert (gauges["pending"], gauges["held"], gauges["oldest"]) == (0, 1, 0)


async def test_without_a_crm_there_is_no_backlog(settings_factory: SettingsFactory) -> None:
    """With no CRM configured every lead stays pending for good: no backlog is reported."""
    app = create_app(settings_factory(jobs={"embedded_worker": False}))
    async with LifespanManager(app):
        key = await app.state.resources.api_keys.create("t", ["leads:write"])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://cauce.test",
            headers={"Authorization": f"Bearer {key.token}"},
        ) as api:
            await api.post("/v1/leads", json={"email": "uno@empresa.es"})
            assert await _gauges(api) == {"oldest": 0.0}  # no status counted

"""An intake merge that replaces a lead's email hands the address over to the other leads
on it (`IntakeWriter._hand_over`); it must lock them with the rest of its leads, in id
order, before the routing rotations (found by a review, helper-132). Before, it updated
them unlocked, last: two merges side by side on a family's mailbox deadlocked on
PostgreSQL (20 of 20 pairs; one answered 503), and so did a batch whose merge handed the
address over beside a batch merging into the other lead (5 of 10 pairs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.config import Settings
from cauce.core.db import create_database, unit_of_work
from cauce.leads.intake_groups import conflict
from cauce.leads.schemas import LeadIn
from cauce.leads.service import LeadsRuntime, intake_many
from tests.conftest import SettingsFactory
from tests.leads.api_client import client_with, post_lead
from tests.leads.test_delivery import MemoryCrm

SCOPES = ["leads:read", "leads:write", "leads:admin"]


def _family(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    mail = f"familia{n}.quispe@gmail.com"
    jorge = {"email": mail, "full_name": f"Jorge{n} Quispe Huamán", "phone": f"+51987654{n:03d}"}
    rosa = {"email": mail, "full_name": f"Rosa{n} Quispe Mamani", "phone": f"+51912345{n:03d}"}
    return jorge, rosa


async def _two_on_the_mailbox(api: httpx.AsyncClient, n: int) -> tuple[dict[str, Any], ...]:
    """Jorge's and Rosa's leads on one mailbox, a review telling them apart."""
    jorge, rosa = _family(n)
    await post_lead(api, jorge)
    held = await post_lead(api, rosa)
    assert held["outcome"] == "held_for_review", held
    review = await api.post(f"/v1/leads/{held['id']}/review", json={"decision": "distinct"})
    assert review.status_code == 200, review.text
    return jorge, rosa


def _settings(settings_factory: SettingsFactory, backend: str, **leads: Any) -> Settings:
    if backend != "postgresql":
        pytest.skip("row locks: PostgreSQL's (SQLite runs one writer at a time)")
    return settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"dedupe": {"overwrite_fields": ["email"]}, **leads},
    )


@pytest.fixture
async def two_apps(
    settings_factory: SettingsFactory, backend: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two API processes on one database (each its own group commit)."""
    settings = _settings(settings_factory, backend)
    apps: list[FastAPI] = [create_app(settings, crm=MemoryCrm()) for _ in range(2)]
    async with LifespanManager(apps[0]), LifespanManager(apps[1]):
        first, second = [await client_with(app, SCOPES) for app in apps]
        async with first, second:
            yield first, second


async def test_two_merges_replacing_a_shared_email_side_by_side(
    two_apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Each of the two, neither delivered yet, moves to a work address at the same moment
    in another process: both merges are accepted, and both leads have their new address."""
    api1, api2 = two_apps
    for n in range(8):
        jorge, rosa = await _two_on_the_mailbox(api1, n)
        answers = await asyncio.gather(
            api1.post("/v1/leads", json={**jorge, "email": f"jorge{n}@trabajo.pe"}),
            api2.post("/v1/leads", json={**rosa, "email": f"rosa{n}@trabajo.pe"}),
        )
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]


async def test_a_hand_over_beside_a_batch_merging_into_the_other_lead(
    settings_factory: SettingsFactory, backend: str
) -> None:
    """Jorge's contact holds the address (delivered); his batch moves him to a work
    address and creates a routed lead, while another batch merges into Rosa's lead and
    creates a routed lead (10 families): neither transaction is PostgreSQL's deadlock victim."""
    settings = _settings(
        settings_factory,
        backend,
        teams={"spain": [{"name": "marta"}, {"name": "pablo"}]},
        default_team="spain",
    )
    app = create_app(settings, crm=MemoryCrm())
    outcomes: list[str] = []
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        dbs = [create_database(settings) for _ in range(2)]
        runtimes = [
            LeadsRuntime(settings=settings, sessionmaker=db.sessionmaker, queue=resources.jobs)
            for db in dbs
        ]

        async def batch(rt: LeadsRuntime, items: list[dict[str, Any]]) -> str:
            try:
                async with unit_of_work(rt.sessionmaker) as session:
                    await intake_many(session, rt, [LeadIn.model_validate(i) for i in items])
            except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
                return "deadlock" if conflict(exc) else repr(exc)
            return "ok"

        try:
            api = await client_with(app, SCOPES)
            async with api:
                for n in range(10):
                    jorge, rosa = await _two_on_the_mailbox(api, n)
                    await job_worker_for(resources).run_until_idle(30)  # Jorge holds it
                    outcomes += await asyncio.gather(
                        batch(
                            runtimes[0],
                            [
                                {**jorge, "email": f"jorge{n}@trabajo.pe"},
                                {"email": f"n{n}a@nuevo.es"},
                            ],
                        ),
                        batch(
                            runtimes[1],
                            [{**rosa, "job_title": "CEO"}, {"email": f"n{n}b@nuevo.es"}],
                        ),
                    )
        finally:
            for db in dbs:
                await db.dispose()
    assert outcomes == ["ok"] * 20, outcomes

"""A lead's trace goes on to its CRM call, whichever trace the delivery job runs in.

Deliveries coalesce: one job per CRM account sends the pending leads of many requests,
and the job's own trace is the request's that deferred it first. Each CRM request runs
in a `crm.deliver.batch` span linked to the spans that made its leads pending
(`Lead.trace_parent`), on both databases, through the real app and job engine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.observability.trace_parent import links_to, span_context_of, traceparent_of
from cauce.leads.models import Lead
from cauce.leads.service import LeadsRuntime
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    settings_factory: SettingsFactory, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, MemoryCrm]]:
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}
    )
    crm = MemoryCrm(max_batch=100)
    app = create_app(settings, crm=crm, span_exporter=exporter)
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        key = await resources.api_keys.create("t", ["leads:read", "leads:write"])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://cauce.test",
            headers={"Authorization": f"Bearer {key.token}"},
        ) as client:
            yield app, client, crm


def _lead(**fields: Any) -> dict[str, Any]:
    return {"email": f"{uuid.uuid4().hex[:10]}@empresa.es", "first_name": "Ana", **fields}


def _servers(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _linked_traces(exporter: InMemorySpanExporter) -> set[int]:
    """The traces the CRM calls' spans link to."""
    return {
        link.context.trace_id
        for span in _servers(exporter, "crm.deliver.batch")
        for link in span.links
    }


async def _drain(app: FastAPI) -> None:
    await job_worker_for(app.state.resources).run_until_idle(30)


async def test_every_request_s_leads_reach_the_crm_call_through_a_link(
    traced: tuple[FastAPI, httpx.AsyncClient, MemoryCrm], exporter: InMemorySpanExporter
) -> None:
    """Single leads sent at once (committed as a group), a batch and a PATCH: one job
    delivers them all, and its CRM call's span links to each of their requests."""
    app, client, crm = traced
    singles = await asyncio.gather(*(client.post("/v1/leads", json=_lead()) for _ in range(4)))
    assert [r.status_code for r in singles] == [201] * 4
    batch = await client.post("/v1/leads/batch", json={"items": [_lead(), _lead()]})
    assert batch.status_code == 200, batch.text
    await _drain(app)
    assert len(crm.contacts) == 6
    # A PATCH later makes a synced lead pending again: its next delivery links to it.
    edited = singles[2].json()["id"]
    patch = await client.patch(f"/v1/leads/{edited}", json={"company": "Acme"})
    assert patch.status_code == 200, patch.text
    before_patch = {id(s) for s in _servers(exporter, "crm.deliver.batch")}
    await _drain(app)

    requests = [
        *_servers(exporter, "POST /v1/leads"),
        *_servers(exporter, "POST /v1/leads/batch"),
        *_servers(exporter, "PATCH /v1/leads/{lead_id}"),
    ]
    assert len(requests) == 6
    wanted = {s.context.trace_id for s in requests if s.context is not None}
    assert len(wanted) == 6
    # The delivery job ran in one request's trace; every other one is reached by a link.
    assert wanted <= _linked_traces(exporter)
    # The PATCH's own delivery links to the PATCH, and names the lead it sent.
    later = [s for s in _servers(exporter, "crm.deliver.batch") if id(s) not in before_patch]
    assert len(later) == 1
    patch_span = _servers(exporter, "PATCH /v1/leads/{lead_id}")[0]
    assert patch_span.context is not None
    assert {link.context.trace_id for link in later[0].links} == {patch_span.context.trace_id}
    assert (later[0].attributes or {})["cauce.lead.ids"] == (edited,)


async def test_a_lead_keeps_the_span_that_made_it_pending(
    traced: tuple[FastAPI, httpx.AsyncClient, MemoryCrm], exporter: InMemorySpanExporter
) -> None:
    """A merge moves a lead's `trace_parent` to the request that merged into it; the link
    is to a span of that request's trace."""
    app, client, _ = traced
    first = await client.post("/v1/leads", json=_lead(email="misma@empresa.es"))
    second = await client.post("/v1/leads", json=_lead(email="misma@empresa.es", city="Lima"))
    assert (first.status_code, second.status_code) == (201, 200)
    rt: LeadsRuntime = app.state.leads
    async with rt.sessionmaker() as session:
        parent = await session.scalar(select(Lead.trace_parent))
    context = span_context_of(parent)
    assert context is not None
    spans = _servers(exporter, "POST /v1/leads")
    assert len(spans) == 2
    merging = spans[1].context
    assert merging is not None
    assert (context.trace_id, context.span_id) == (merging.trace_id, merging.span_id)


def test_stored_traceparents_read_back_and_bad_ones_are_ignored() -> None:
    """A traceparent read back names the same span; malformed or empty ones give no link,
    and one span given twice gives one link."""
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = span_context_of(good)
    assert context is not None
    assert traceparent_of(context) == good
    for bad in (
        None,
        "",
        "00-abc-def-01",
        "01-" + good[3:],
        good.replace("b7ad", "zzzz"),
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",
    ):
        assert span_context_of(bad) is None
    assert len(links_to([good, good, None, "nonsense"])) == 1

"""Fixtures for the sandbox CRM: a hand-moved clock, servers started on 127.0.0.1, clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from cauce.sandbox import (
    FaultSettings,
    SandboxCrm,
    SandboxCrmConfig,
    WebhookTransport,
    start_sandbox_crm,
)

UPSERT = "/crm/v3/objects/contacts/batch/upsert"
READ = "/crm/v3/objects/contacts/batch/read"
ARCHIVE = "/crm/v3/objects/contacts/batch/archive"
CONTACTS = "/crm/v3/objects/contacts"


class ManualClock:
    """Monotonic time that moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        """The current fake time."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds


def by_email(*emails: str, **props: str) -> dict[str, Any]:
    """A batch upsert body keyed on email."""
    return {"inputs": [{"idProperty": "email", "id": e, "properties": dict(props)} for e in emails]}


StartCrm = Callable[..., Awaitable[tuple[SandboxCrm, httpx.AsyncClient]]]


@pytest.fixture
def clock() -> ManualClock:
    """A clock for the limiter, the short day and outages."""
    return ManualClock()


@pytest.fixture
async def test_transport() -> AsyncIterator[WebhookTransport]:
    """An httpx webhook transport that outlives every sandbox of the test."""
    async with httpx_transport() as transport:
        yield transport


@pytest.fixture
async def start_crm(test_transport: WebhookTransport) -> AsyncIterator[StartCrm]:
    """Start sandboxes with given config fields (``faults_X`` sets a fault); each with a client.

    Webhooks go through the test's httpx transport unless ``webhook_transport=None`` is
    passed explicitly, which selects the sandbox's own ``cauce.core.http`` transport.
    """
    running: list[tuple[SandboxCrm, httpx.AsyncClient]] = []

    async def start(
        *, webhook_transport: WebhookTransport | None = test_transport, **fields: Any
    ) -> tuple[SandboxCrm, httpx.AsyncClient]:
        fields.setdefault("seed", 1)
        faults = {
            k.removeprefix("faults_"): fields.pop(k)
            for k in list(fields)
            if k.startswith("faults_")
        }
        config = SandboxCrmConfig(**fields, faults=FaultSettings(**faults))
        crm = await start_sandbox_crm(config, webhook_transport=webhook_transport)
        client = httpx.AsyncClient(
            base_url=crm.url, headers={"Authorization": f"Bearer {crm.token}"}, timeout=10
        )
        running.append((crm, client))
        return crm, client

    yield start
    for crm, client in running:
        await client.aclose()
        await crm.stop()


@pytest.fixture
async def crm_client(start_crm: StartCrm) -> httpx.AsyncClient:
    """A client of a default sandbox (results in input order, for readable assertions)."""
    _, client = await start_crm(shuffle_results=False)
    return client


@dataclass
class Received:
    """One webhook request as the receiver saw it."""

    method: str
    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that records requests and answers scripted statuses."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def events(self) -> list[dict[str, Any]]:
        """Every event of every successfully answered request, in arrival order."""
        out: list[dict[str, Any]] = []
        for req in self.requests:
            out.extend(orjson.loads(req.body))
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A running webhook receiver."""
    rec = Receiver()

    async def hook(request: web.Request) -> web.Response:
        status = rec.statuses.pop(0) if rec.statuses else 204
        body = await request.read()
        if 200 <= status < 300:
            rec.requests.append(Received(request.method, str(request.url), body, request.headers))
            rec.arrived.set()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hooks/hubspot", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/hooks/hubspot"
    yield rec
    await runner.cleanup()


@asynccontextmanager
async def httpx_transport() -> AsyncIterator[WebhookTransport]:
    """A webhook transport over httpx (tests only; Cauce wires one from core.http)."""
    async with httpx.AsyncClient(timeout=5) as client:

        async def send(url: str, body: bytes, headers: Mapping[str, str]) -> int:
            response = await client.post(url, content=body, headers=dict(headers))
            return response.status_code

        yield send

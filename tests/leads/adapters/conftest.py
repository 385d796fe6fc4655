"""Fixtures for the CRM adapter tests: clocks, the sandbox CRM, guarded HTTP clients, contacts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cauce.core.config import Settings
from cauce.core.db import Database, create_database
from cauce.core.http import HttpClients, Request, Response, Transport
from cauce.core.resilience import (
    BreakerPolicy,
    FakeClock,
    RetryBudgetPolicy,
    RetryPolicy,
    UpstreamPolicy,
)
from cauce.leads.adapters import HubSpotCrm
from cauce.leads.ports import CrmContact, CrmKey
from cauce.sandbox import FaultSettings, SandboxCrm, SandboxCrmConfig, start_sandbox_crm
from tests.conftest import SettingsFactory

#: A Monday morning in March, before Spain's DST change (Madrid is UTC+1).
WALL_START = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)
CUSTOM_PROPERTIES = ("cauce_score", "cauce_owner")


class ManualClock:
    """Monotonic seconds for the sandbox's windows; moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds


class WallClock:
    """Wall time for the adapters' throttle deadlines; moves only when a test says so."""

    def __init__(self, start: datetime = WALL_START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += timedelta(seconds=seconds)


def fast_policy(**sections: Any) -> UpstreamPolicy:
    """Three attempts with tiny backoffs, no breaker or budget unless given."""
    sections.setdefault("breaker", BreakerPolicy(enabled=False))
    sections.setdefault(
        "retry",
        RetryPolicy(
            max_attempts=3,
            backoff_base=0.001,
            backoff_cap=0.01,
            budget=RetryBudgetPolicy(enabled=False),
        ),
    )
    return UpstreamPolicy.model_validate(sections)


def contact(
    lead_id: int, email: str | None = None, *, uid: str | None = None, **props: Any
) -> CrmContact:
    """A contact keyed by email, or by its Cauce id when it has no email."""
    uid = uid or f"00000000-0000-4000-8000-{lead_id:012d}"
    properties: dict[str, Any] = {"cauce_id": uid, **props}
    if email:
        properties["email"] = email
        key = CrmKey("email", email)
    else:
        key = CrmKey("cauce_id", uid)
    return CrmContact(lead_id, 1, key, properties)


@pytest.fixture
def sandbox_clock() -> ManualClock:
    """The sandbox's clock (rate windows, the short day, outages)."""
    return ManualClock()


@pytest.fixture
def wall() -> WallClock:
    """The adapters' wall clock."""
    return WallClock()


@pytest.fixture
def pipeline_clock() -> FakeClock:
    """The guards' clock: backoffs and Retry-After waits take no real time."""
    return FakeClock()


StartSandbox = Callable[..., Awaitable[SandboxCrm]]


@pytest.fixture
async def start_sandbox(sandbox_clock: ManualClock) -> AsyncIterator[StartSandbox]:
    """Start sandbox CRMs on 127.0.0.1 (``faults_X=`` sets a fault); stopped after the test."""
    running: list[SandboxCrm] = []

    async def start(**fields: Any) -> SandboxCrm:
        fields.setdefault("seed", 1)
        fields.setdefault("clock", sandbox_clock)
        fields.setdefault("extra_properties", CUSTOM_PROPERTIES)
        faults = {
            k.removeprefix("faults_"): fields.pop(k)
            for k in list(fields)
            if k.startswith("faults_")
        }
        crm = await start_sandbox_crm(SandboxCrmConfig(**fields, faults=FaultSettings(**faults)))
        running.append(crm)
        return crm

    yield start
    for crm in running:
        await crm.stop()


MakeClients = Callable[..., HttpClients]


@pytest.fixture
async def make_clients(pipeline_clock: FakeClock) -> AsyncIterator[MakeClients]:
    """Build ``HttpClients`` on the fake guard clock with ``fast_policy()``; closed after."""
    built: list[HttpClients] = []

    def make(**kwargs: Any) -> HttpClients:
        kwargs.setdefault("default_policy", fast_policy())
        kwargs.setdefault("clock", pipeline_clock)
        kwargs.setdefault("rng", random.Random(7))
        clients = HttpClients(**kwargs)
        built.append(clients)
        return clients

    yield make
    for clients in built:
        await clients.close()


MakeHubSpot = Callable[..., Awaitable[tuple[HubSpotCrm, SandboxCrm]]]


@pytest.fixture
def make_hubspot(
    start_sandbox: StartSandbox, make_clients: MakeClients, wall: WallClock
) -> MakeHubSpot:
    """A sandbox and a HubSpot adapter on it through the real ``core.http`` client.

    ``policy=`` sets the upstream's guards, ``clients=`` reuses ``HttpClients``, every
    other keyword configures the sandbox (``adapter={...}`` the adapter).
    """

    async def make(
        *,
        policy: UpstreamPolicy | None = None,
        clients: HttpClients | None = None,
        adapter: dict[str, Any] | None = None,
        **sandbox: Any,
    ) -> tuple[HubSpotCrm, SandboxCrm]:
        crm = await start_sandbox(**sandbox)
        if clients is None:
            clients = make_clients(policies={"hubspot": policy or fast_policy()})
        options: dict[str, Any] = {"token": crm.token, "base_url": crm.url, "clock": wall}
        options.update(adapter or {})
        return HubSpotCrm(clients.get("hubspot"), **options), crm

    return make


class FlakyTransport:
    """Wraps a transport: the first ``failures`` exchanges answer 503 without reaching it."""

    def __init__(self, inner: Transport, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.sent: list[Request] = []

    async def send(self, request: Request) -> Response:
        """Record the request, then fail it or pass it on."""
        self.sent.append(request)
        if self.failures > 0:
            self.failures -= 1
            return Response(503, content=b"<html>503</html>")
        return await self.inner.send(request)

    async def close(self) -> None:
        """Close the wrapped transport."""
        await self.inner.close()


@pytest.fixture
def crm_settings(settings_factory: SettingsFactory, sandbox: SandboxCrm) -> Settings:
    """Settings pointing the HubSpot provider at the module's `sandbox` (each module that
    delivers through the sandbox defines that fixture, with its faults)."""
    return settings_factory(
        crm={"provider": "hubspot", "token": sandbox.token, "base_url": sandbox.url}
    )


@pytest.fixture
async def db(crm_settings: Settings) -> AsyncIterator[Database]:
    """This test's database, on `crm_settings`."""
    database = create_database(crm_settings)
    yield database
    await database.dispose()

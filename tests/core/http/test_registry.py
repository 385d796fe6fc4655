"""``HttpClients``: one client per upstream from settings, hooks, health and shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from cauce.core.http import (
    ClientClosedError,
    ClientOptions,
    HttpClient,
    HttpClients,
    Request,
    Response,
    Transport,
    UpstreamClient,
    UpstreamServerError,
)
from cauce.core.resilience import RecordingEvents
from tests.conftest import make_settings
from tests.core.http.conftest import ClientsFactory
from tests.core.http.upstream import Reply, ScriptedServer


async def test_one_client_per_upstream_with_its_policy_from_settings(tmp_path: Path) -> None:
    """Named upstreams get their policy from settings, others the default; clients are reused."""
    settings = make_settings(tmp_path, upstreams={"hubspot": {"retry": {"max_attempts": 5}}})
    async with HttpClients.from_settings(settings) as clients:
        hubspot = clients.get("hubspot")
        port: HttpClient = hubspot  # the client satisfies the adapters' port (mypy checks)
        assert clients.get("hubspot") is port
        assert hubspot.upstream == "hubspot"
        assert hubspot.pipeline is not None
        assert hubspot.pipeline.breaker is not None
        other = clients.get("zendesk")
        assert other is not hubspot
        assert [c.upstream for c in clients] == ["hubspot", "zendesk"]
        assert clients.circuit_states() == {"hubspot": "closed", "zendesk": "closed"}


async def test_retry_attempts_follow_the_upstream_policy(
    tmp_path: Path, upstream: ScriptedServer
) -> None:
    """CAUCE_UPSTREAMS__X__RETRY__MAX_ATTEMPTS decides how often a 503 is retried."""
    upstream.script("/c", Reply(503))
    settings = make_settings(
        tmp_path,
        upstreams={
            "crm": {
                "retry": {"max_attempts": 4, "backoff_base": 0.001, "backoff_cap": 0.002},
                "breaker": {"enabled": False},
            }
        },
    )
    async with HttpClients.from_settings(settings) as clients:
        with pytest.raises(UpstreamServerError):
            await clients.get("crm").send(Request.get(upstream.url("/c")))
    assert upstream.hits("/c") == 4


async def test_close_refuses_new_work_without_retrying(
    upstream: ScriptedServer, make_clients: ClientsFactory, events: RecordingEvents
) -> None:
    """After close: check() fails, get() fails, and a held client fails fast once."""
    clients = make_clients()
    client = clients.get("crm")
    await client.send(Request.get(upstream.url("/c")))
    await clients.check()
    await clients.close()
    with pytest.raises(ClientClosedError):
        await clients.check()
    with pytest.raises(ClientClosedError):
        clients.get("other")
    attempts = len(events.of("attempt"))
    with pytest.raises(ClientClosedError):
        await client.send(Request.get(upstream.url("/c")))
    assert len(events.of("attempt")) == attempts + 1
    assert upstream.hits("/c") == 1


async def test_wrap_transport_hook_sees_every_exchange(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """The transport hook wraps each upstream's transport once and sees each hop."""
    seen: list[tuple[str, str]] = []

    class Recording:
        def __init__(self, name: str, inner: Transport) -> None:
            self.name, self.inner = name, inner

        async def send(self, request: Request) -> Response:
            seen.append((self.name, request.method))
            return await self.inner.send(request)

        async def close(self) -> None:
            await self.inner.close()

    clients = make_clients(wrap_transport=Recording)
    await clients.get("crm").send(Request.get(upstream.url("/c")))
    await clients.get("crm").send(Request.delete(upstream.url("/c")))
    assert seen == [("crm", "GET"), ("crm", "DELETE")]


async def test_transport_factory_replaces_the_network(make_clients: ClientsFactory) -> None:
    """A transport factory lets tests answer without any server."""

    class Canned:
        async def send(self, request: Request) -> Response:
            return Response(200, content=b'{"canned": true}', url=request.url)

        async def close(self) -> None:
            return None

    def factory(name: str, options: ClientOptions) -> Transport:
        return Canned()

    client: UpstreamClient = make_clients(transport_factory=factory).get("crm")
    response = await client.send(Request.get("https://api.hubapi.com/x"))
    assert response.json() == {"canned": True}

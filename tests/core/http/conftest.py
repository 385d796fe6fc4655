"""Fixtures for the HTTP-layer tests: scripted local upstreams, fast policies, clients."""

from __future__ import annotations

import random
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cauce.core.http import HttpClients
from cauce.core.resilience import (
    BreakerPolicy,
    FakeClock,
    RecordingEvents,
    RetryBudgetPolicy,
    RetryPolicy,
    UpstreamPolicy,
)
from tests.core.http.upstream import ScriptedServer, StartServer

ClientsFactory = Callable[..., HttpClients]


def fast_policy(**sections: Any) -> UpstreamPolicy:
    """A policy with tiny backoffs, no breaker and no retry budget unless given."""
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


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start scripted servers (``await start_server(host=, ssl_context=, port=)``); stops them."""
    servers: list[ScriptedServer] = []

    async def start(
        host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None, port: int = 0
    ) -> ScriptedServer:
        server = await ScriptedServer(host, ssl_context, port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def upstream(start_server: StartServer) -> ScriptedServer:
    """A scripted server on 127.0.0.1."""
    return await start_server()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock: backoffs and Retry-After waits take no real time."""
    return FakeClock()


@pytest.fixture
def events() -> RecordingEvents:
    """Records every pipeline decision."""
    return RecordingEvents()


@pytest.fixture
async def make_clients(clock: FakeClock, events: RecordingEvents) -> AsyncIterator[ClientsFactory]:
    """Build ``HttpClients`` on the fake clock with ``fast_policy()``; closes them after."""
    built: list[HttpClients] = []

    def make(**kwargs: Any) -> HttpClients:
        kwargs.setdefault("default_policy", fast_policy())
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("events", events)
        kwargs.setdefault("rng", random.Random(7))
        clients = HttpClients(**kwargs)
        built.append(clients)
        return clients

    yield make
    for clients in built:
        await clients.close()


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and its key."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context presenting the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def trusting_context(self) -> ssl.SSLContext:
        """A client-side context that trusts the certificate (and verifies it)."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Generate a throwaway self-signed certificate with ``openssl``."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return TlsFiles(cert, key)

"""TLS verification is on by default; trusting a private CA is explicit."""

from __future__ import annotations

import pytest

from cauce.core.http import ClientOptions, Request, UpstreamTlsError
from cauce.core.resilience import RecordingEvents
from tests.core.http.conftest import ClientsFactory, TlsFiles
from tests.core.http.upstream import StartServer


async def test_self_signed_server_is_refused_by_default(
    start_server: StartServer,
    make_clients: ClientsFactory,
    tls_files: TlsFiles,
    events: RecordingEvents,
) -> None:
    """An https call to a self-signed local server fails verification and is not retried."""
    server = await start_server(ssl_context=tls_files.server_context())
    client = make_clients().get("crm")
    with pytest.raises(UpstreamTlsError):
        await client.send(Request.get(server.url("/c")))
    assert server.hits() == 0
    assert len(events.of("attempt")) == 1


async def test_a_trusted_private_ca_verifies(
    start_server: StartServer, make_clients: ClientsFactory, tls_files: TlsFiles
) -> None:
    """With the certificate given as the trust anchor, the same server answers."""
    server = await start_server(ssl_context=tls_files.server_context())
    options = ClientOptions(ssl_context=tls_files.trusting_context())
    client = make_clients(default_options=options).get("crm")
    response = await client.send(Request.get(server.url("/c")))
    assert response.status == 200
    assert server.hits("/c") == 1

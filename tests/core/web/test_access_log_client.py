"""`http.access_log_client`: what the access line keeps of the client's address, personal
data under the GDPR. By default its network (IPv4 /24, IPv6 /48), never the host nor the
port; `full` keeps the address, `off` leaves the field out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from cauce.app import create_app
from cauce.core.config import load_settings
from cauce.core.errors import ConfigError
from cauce.core.observability.logging import configure_logging
from cauce.core.observability.metrics import HttpMetrics, build_registry
from cauce.core.web.middleware import (
    CLIENT_NOT_AN_ADDRESS,
    RequestContextMiddleware,
    client_network,
)
from tests.conftest import SettingsFactory, make_settings

IPV4 = "203.0.113.77"
IPV6 = "2001:db8:abcd:12::5"
MAPPED = "::ffff:192.0.2.9"


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _middleware(**options: Any) -> RequestContextMiddleware:
    return RequestContextMiddleware(
        _ok, metrics=HttpMetrics(build_registry()), max_body_bytes=1024, **options
    )


async def _access_line(
    middleware: RequestContextMiddleware, client: Any, *, omit_client: bool = False
) -> dict[str, Any]:
    """The access line of one request from `client` (the ASGI scope's `client`)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 8000),
    }
    if not omit_client:
        scope["client"] = client
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    with capture_logs() as logs:
        await middleware(scope, receive, send)
    assert sent[0]["status"] == 200
    (line,) = [e for e in logs if e["event"] == "http.request"]
    return dict(line)


# --- the modes, on the middleware ---------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (IPV4, "203.0.113.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        (IPV6, "2001:db8:abcd::/48"),
        ("2a02:9130:ffff:1:2:3:4:5", "2a02:9130:ffff::/48"),
        (MAPPED, "192.0.2.0/24"),
        ("2002:c000:209::1", "192.0.2.0/24"),  # 6to4: its /48 holds the whole IPv4 address
        ("fe80::1%eth0", "fe80::/48"),  # the zone goes with the host bits
        ("127.0.0.1", "127.0.0.0/24"),
    ],
)
async def test_network_keeps_the_network_not_the_host_nor_the_port(
    peer: str, expected: str
) -> None:
    line = await _access_line(_middleware(access_log_client="network"), (peer, 51234))
    assert line["client"] == expected
    assert "51234" not in json.dumps(line)


async def test_network_is_the_default(tmp_path: Path) -> None:
    line = await _access_line(_middleware(), (IPV4, 51234))
    assert line["client"] == "203.0.113.0/24"
    assert make_settings(tmp_path).http.access_log_client == "network"


@pytest.mark.parametrize("peer", [IPV4, IPV6, MAPPED])
async def test_full_keeps_the_address_without_its_port(peer: str) -> None:
    line = await _access_line(_middleware(access_log_client="full"), (peer, 51234))
    assert line["client"] == peer


@pytest.mark.parametrize("peer", [(IPV4, 51234), (IPV6, 443), ("testclient", 50000), None])
async def test_off_leaves_the_client_out(peer: Any) -> None:
    line = await _access_line(_middleware(access_log_client="off"), peer)
    assert "client" not in line
    assert line["status"] == 200
    assert IPV4 not in json.dumps(line)


@pytest.mark.parametrize(
    ("peer", "network", "full"),
    [
        # Starlette's and httpx's test clients; a name a proxy passed on in X-Forwarded-For.
        (("testclient", 50000), CLIENT_NOT_AN_ADDRESS, "testclient"),
        (("unknown", 0), CLIENT_NOT_AN_ADDRESS, "unknown"),
        (("pc-juan.corp.example", 0), CLIENT_NOT_AN_ADDRESS, "pc-juan.corp.example"),
        # A unix socket's peer: uvicorn gives None, others an empty host.
        (None, None, None),
        (("", 0), None, None),
        ((), None, None),
    ],
)
async def test_a_peer_that_is_no_ip_address_does_not_fail(
    peer: Any, network: str | None, full: str | None
) -> None:
    assert (await _access_line(_middleware(), peer))["client"] == network
    assert (await _access_line(_middleware(access_log_client="full"), peer))["client"] == full


async def test_a_scope_without_client_is_logged_without_one() -> None:
    line = await _access_line(_middleware(), None, omit_client=True)
    assert line["client"] is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[2001:db8::1]", "2001:db8::/48"),
        ("[2001:db8::1]:443", "2001:db8::/48"),
        ("203.0.113.7:51000", "203.0.113.0/24"),
        (" 203.0.113.7 ", "203.0.113.0/24"),
        ("203.0.113.0/24", CLIENT_NOT_AN_ADDRESS),
        ("", CLIENT_NOT_AN_ADDRESS),
    ],
)
def test_client_network_reads_an_address_written_with_its_port(host: str, expected: str) -> None:
    assert client_network(host) == expected


def test_the_middleware_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="access_log_client must be one of"):
        _middleware(access_log_client="hashed")


# --- the setting ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "network", "off"])
def test_the_setting_takes_each_mode(tmp_path: Path, mode: str) -> None:
    settings = make_settings(tmp_path, http={"access_log_client": mode})
    assert settings.http.access_log_client == mode


@pytest.mark.usefixtures("clean_env")
def test_the_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUCE_HTTP__ACCESS_LOG_CLIENT", "off")
    assert load_settings().http.access_log_client == "off"


@pytest.mark.usefixtures("clean_env")
def test_a_bad_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUCE_HTTP__ACCESS_LOG_CLIENT", "anonymous")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "CAUCE_HTTP__ACCESS_LOG_CLIENT" in message
    assert "'full', 'network' or 'off'" in message


def test_a_bad_value_in_the_toml_names_the_setting(toml: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        toml('[http]\naccess_log_client = "truncated"\n')
    message = str(raised.value)
    assert "http.access_log_client" in message
    assert "'full', 'network' or 'off'" in message


# --- through the app and the real log chain ----------------------------------------------


@pytest.fixture
def log_stream(tmp_path: Path) -> Iterator[io.StringIO]:
    """JSON log lines at info level, captured; the default logging restored afterwards."""
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log={"format": "json", "level": "info"}), stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def _access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "http.request"]


@pytest.fixture
def backend() -> str:
    """SQLite only: the access line is the web layer's, the same on either database."""
    return "sqlite"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(None, "203.0.113.0/24"), ("network", "203.0.113.0/24"), ("full", IPV4), ("off", None)],
)
async def test_the_app_wires_the_setting_into_its_access_lines(
    settings_factory: SettingsFactory,
    log_stream: io.StringIO,
    mode: str | None,
    expected: str | None,
) -> None:
    """From `Settings` to the JSON line on the log stream (the redaction processors
    included): the default and each mode."""
    http = {} if mode is None else {"access_log_client": mode}
    app = create_app(settings_factory(http=http))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=(IPV4, 51234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/me")).status_code == 401
    (line,) = _access_lines(log_stream)
    assert line["status"] == 401
    assert line["code"] == "unauthenticated"
    assert line.get("client") == expected
    assert ("client" in line) is (mode != "off")
    if mode != "full":
        assert IPV4 not in log_stream.getvalue()
    assert "51234" not in log_stream.getvalue()

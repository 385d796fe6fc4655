"""What spans and scrapes must not carry: the raw path of a request no route matched, a
path parameter that is not an id, the client's own address, the data directory of a
SQLite database, and prometheus_client's `_created` series."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, generate_latest

from cauce import SHARED_METRICS_ENV
from cauce.app import create_app
from cauce.core.config import Settings
from cauce.core.observability.metrics import HttpMetrics, build_registry
from cauce.core.observability.tracing import (
    UNMATCHED,
    client_network,
    database_name,
    redact_server_span,
)
from cauce.core.resilience import (
    PrometheusEvents,
    RetryableError,
    UpstreamPolicy,
    UpstreamThrottledError,
    build_pipeline,
)
from cauce.core.resilience.events import EventSink
from cauce.core.resilience.sinks_collector import CollectorEvents

EMAIL = "ana.torres@example.com"
PHONE = "600111222"
LEAD_UID = "0192f0e0-5b1c-4c2e-9a3d-4f5e6a7b8c9d"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Spans finished during the test."""
    return InMemorySpanExporter()


@pytest.fixture
async def traced(settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[FastAPI]:
    """The app with tracing on, exporting to memory."""
    app = create_app(settings, span_exporter=exporter)
    async with LifespanManager(app):
        yield app


async def _get(
    app: FastAPI,
    paths: Iterable[str],
    scopes: list[str],
    peer: tuple[str, int] = ("127.0.0.1", 123),
) -> None:
    """GET each path with a key holding `scopes`, from `peer`."""
    created = await app.state.resources.api_keys.create("spans", scopes)
    headers = {"authorization": f"Bearer {created.token}"}
    transport = httpx.ASGITransport(app=app, client=peer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in paths:
            await client.get(path, headers=headers)


def _servers(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def _text(spans: Iterable[ReadableSpan]) -> str:
    """Every span's name and attribute values, as one string to search."""
    return " ".join(
        f"{s.name} " + " ".join(str(v) for v in (s.attributes or {}).values()) for s in spans
    )


# --- server spans -----------------------------------------------------------------------


async def test_unmatched_path_leaves_no_trace_of_itself(
    traced: FastAPI, exporter: InMemorySpanExporter
) -> None:
    """A path no route matches (a scanner's, or a client's typo with an email and a phone
    in it) is `<unmatched>` in the server span, as in the metrics, and so is its query."""
    exporter.clear()
    await _get(
        traced, [f"/wp-admin/{EMAIL}/{PHONE}", f"/wp-login.php?{EMAIL}&u={PHONE}"], ["leads:read"]
    )
    servers = _servers(exporter)
    assert len(servers) == 2
    for span in servers:
        attributes = dict(span.attributes or {})
        assert attributes["http.target"] == UNMATCHED
        assert "http.route" not in attributes
        assert span.name == "GET"
    urls = [dict(s.attributes or {})["http.url"] for s in servers]
    assert urls == ["http://t/<unmatched>", "http://t/<unmatched>?REDACTED"]
    every = _text(exporter.get_finished_spans())
    for secret in ("ana.torres", "example.com", PHONE, "wp-admin", "wp-login"):
        assert secret not in every


async def test_matched_route_keeps_ids_and_hides_other_values(
    traced: FastAPI, exporter: InMemorySpanExporter
) -> None:
    """A route's path parameters stay in the span when they are ids (a lead's UUID, a
    job's number); any other value (an email where a lead id goes, a phone-long number)
    becomes the template's `{name}`."""
    exporter.clear()
    paths = [f"/v1/leads/{LEAD_UID}", f"/v1/leads/{EMAIL}", "/v1/jobs/42", f"/v1/jobs/{PHONE}"]
    await _get(traced, paths, ["admin"])
    targets = [(s.name, dict(s.attributes or {})["http.target"]) for s in _servers(exporter)]
    assert targets == [
        ("GET /v1/leads/{lead_id}", f"/v1/leads/{LEAD_UID}"),
        ("GET /v1/leads/{lead_id}", "/v1/leads/{lead_id}"),
        ("GET /v1/jobs/{job_id}", "/v1/jobs/42"),
        ("GET /v1/jobs/{job_id}", "/v1/jobs/{job_id}"),
    ]
    urls = [dict(s.attributes or {})["http.url"] for s in _servers(exporter)]
    assert urls[1] == "http://t/v1/leads/{lead_id}"
    every = _text(exporter.get_finished_spans())
    assert "ana.torres" not in every
    assert PHONE not in every


async def test_server_spans_keep_the_clients_network_not_its_address(
    traced: FastAPI, exporter: InMemorySpanExporter
) -> None:
    """An IP address is personal data: a server span says which network a request came
    from (IPv4 /24, IPv6 /48), never which host."""
    for peer, network in [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:12::5", "2001:db8:abcd::"),
    ]:
        exporter.clear()
        await _get(traced, ["/v1/me"], ["leads:read"], peer=(peer, 51000))
        (span,) = _servers(exporter)
        attributes = dict(span.attributes or {})
        assert attributes["net.peer.ip"] == network
        assert peer not in _text(exporter.get_finished_spans())


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("198.51.100.200", "198.51.100.0"),
        ("10.1.2.3", "10.1.2.0"),
        ("::ffff:192.0.2.9", "192.0.2.0"),
        ("[2001:db8::1]", "2001:db8::"),
        ("2a02:9130:ffff:1:2:3:4:5", "2a02:9130:ffff::"),
        ("2002:c000:209::1", "192.0.2.0"),  # 6to4: its /48 would be all of 192.0.2.9
        ("proxy.internal", "REDACTED"),
        ("", "REDACTED"),
    ],
)
def test_client_network(address: str, network: str) -> None:
    assert client_network(address) == network


def test_every_client_address_convention_is_cut_to_its_network() -> None:
    """Old (`net.peer.ip`, `net.sock.peer.addr`) and stable (`client.address`,
    `network.peer.address`) conventions alike; ports and other attributes stay."""
    span = _Span(
        "GET",
        {
            "net.peer.ip": "203.0.113.77",
            "net.sock.peer.addr": "203.0.113.77",
            "client.address": "2001:db8:abcd:12::5",
            "client.socket.address": "2001:db8:abcd:12::5",
            "network.peer.address": "203.0.113.77",
            "net.peer.port": 51000,
        },
    )
    redact_server_span(span, {"path": "/", "query_string": b""})
    assert span.attributes == {
        "net.peer.ip": "203.0.113.0",
        "net.sock.peer.addr": "203.0.113.0",
        "client.address": "2001:db8:abcd::",
        "client.socket.address": "2001:db8:abcd::",
        "network.peer.address": "203.0.113.0",
        "net.peer.port": 51000,
    }


class _Span:
    """The part of a span `redact_server_span` uses."""

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.attributes = attributes

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def update_name(self, name: str) -> None:
        self.name = name


def test_stable_conventions_and_root_path_are_redacted() -> None:
    """The stable HTTP conventions' attributes (`url.path`, `url.query`, `url.full`) are
    redacted as the old ones are; an app mounted under a root path keeps its prefix; a
    span named after the raw path is renamed."""
    raw = f"/api/v1/leads/{EMAIL}"
    span = _Span(
        f"GET {raw}",
        {
            "http.route": "/v1/leads/{lead_id}",
            "url.path": raw,
            "url.query": f"q={EMAIL}",
            "url.full": f"https://cauce.example:8443{raw}?q={EMAIL}",
        },
    )
    scope = {"path": raw, "root_path": "/api", "query_string": f"q={EMAIL}".encode()}
    redact_server_span(span, scope)
    assert span.attributes == {
        "http.route": "/v1/leads/{lead_id}",
        "url.path": "/api/v1/leads/{lead_id}",
        "url.query": "q=REDACTED",
        "url.full": "https://cauce.example:8443/api/v1/leads/{lead_id}?q=REDACTED",
    }
    assert span.name == "GET /api/v1/leads/{lead_id}"

    unmatched = _Span("GET", {"url.path": f"/{PHONE}", "url.query": "a=1"})
    redact_server_span(unmatched, {"path": f"/{PHONE}", "query_string": b"a=1"})
    assert unmatched.attributes == {"url.path": UNMATCHED, "url.query": "REDACTED"}


def test_a_malformed_host_does_not_stop_the_redaction() -> None:
    """A Host header a URL parser refuses (`[::1`) still gets its URL's path replaced."""
    span = _Span("GET", {"http.url": f"http://[::1/x/{EMAIL}", "http.target": f"/x/{EMAIL}"})
    redact_server_span(span, {"path": f"/x/{EMAIL}", "query_string": b""})
    assert span.attributes == {"http.url": "http://[::1/<unmatched>", "http.target": UNMATCHED}


# --- database spans ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_spans_name_the_database_not_its_directory(
    traced: FastAPI, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """SQLite query spans are `SELECT cauce`, with `db.name` `cauce`: the data directory
    (`/var/lib/cauce/`) appears in no span; the statement is untouched."""
    exporter.clear()
    await _get(traced, ["/v1/me"], ["leads:read"])
    queries = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert queries, [s.name for s in exporter.get_finished_spans()]
    assert {s.name.split()[0] for s in queries} <= {"SELECT", "INSERT", "UPDATE", "DELETE"}
    for span in queries:
        attributes = dict(span.attributes or {})
        assert span.name.endswith(" cauce"), span.name
        assert attributes["db.name"] == "cauce"
        assert attributes["db.operation"] == span.name
        assert str(attributes["db.statement"]).split()[0] == span.name.split()[0]
    assert str(tmp_path) not in _text(exporter.get_finished_spans())


@pytest.mark.parametrize(
    ("database", "name"),
    [
        ("/var/lib/cauce/cauce.db", "cauce"),
        ("relative/dir/leads.sqlite3", "leads"),
        ("cauce.db", "cauce"),
        (":memory:", ":memory:"),
    ],
)
def test_database_name(database: str, name: str) -> None:
    """A SQLite database is named by its file, without directories or suffix."""
    assert database_name(database) == name


# --- metrics ----------------------------------------------------------------------------


async def test_scrapes_have_no_created_series(app: FastAPI, client: httpx.AsyncClient) -> None:
    """The API's /metrics shows no `_created` series, for counters and histograms alike
    (one per child, doubling the series, for a timestamp nothing reads)."""
    await client.get("/healthz")
    await client.get("/no/such/thing")
    body = (await client.get("/metrics")).text
    assert "cauce_http_requests_total{" in body
    assert "cauce_http_request_duration_seconds_count{" in body
    assert "_created" not in body


def test_a_worker_registry_has_no_created_series() -> None:
    """A registry built as `cauce worker` builds it exports no `_created` series either,
    whatever counter is added to it."""
    registry = build_registry()
    Counter("cauce_probe", "A probe", ["kind"], registry=registry).labels("x").inc()
    HttpMetrics(registry).observe("GET", "/x", 200, 0.1)
    text = generate_latest(registry).decode()
    assert 'cauce_probe_total{kind="x"} 1.0' in text
    assert "_created" not in text


def test_processes_sharing_metrics_have_no_created_series(tmp_path: Path) -> None:
    """`cauce serve --workers N`: a scrape of the processes' shared metrics has none."""
    probe = (
        "from cauce.core.observability.metrics import HttpMetrics, build_registry, "
        "exposition, shared_metrics_dir\n"
        "registry = build_registry()\n"
        "HttpMetrics(registry).observe('GET', '/x', 200, 0.1)\n"
        "assert shared_metrics_dir() is not None\n"
        "print(exposition(registry).decode())\n"
    )
    env = {SHARED_METRICS_ENV: str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert 'cauce_http_requests_total{method="GET",route="/x",status="200"} 1.0' in done.stdout
    assert "_created" not in done.stdout


@pytest.mark.parametrize("sink", [CollectorEvents, PrometheusEvents])
async def test_a_429_is_counted_as_throttled(
    sink: Callable[[CollectorRegistry], EventSink],
) -> None:
    """An upstream's 429 is the outcome `throttled` in cauce_upstream_requests_total, not
    `error` (which a 5xx still is), with either sink (the app's collector, or the
    prometheus_client one)."""
    registry = CollectorRegistry()
    policy = UpstreamPolicy.model_validate({"retry": {"max_attempts": 1}})
    pipeline = build_pipeline("crm", policy, events=sink(registry))

    async def throttled() -> None:
        raise UpstreamThrottledError("HTTP 429")

    async def failing() -> None:
        raise RetryableError("HTTP 503")

    for call in (throttled, throttled, failing):
        with pytest.raises(RetryableError):
            await pipeline.execute(call)

    def outcome(name: str) -> float | None:
        labels = {"upstream": "crm", "outcome": name}
        return registry.get_sample_value("cauce_upstream_requests_total", labels)

    assert (outcome("throttled"), outcome("error")) == (2, 1)

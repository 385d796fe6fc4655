"""Logs, traces and metrics: what operators rely on."""

from __future__ import annotations

import gc
import io
import json
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from cauce.app import YOUNG_COLLECTION_THRESHOLD, create_app
from cauce.core.config import Settings
from cauce.core.db import Database
from cauce.core.observability.logging import configure_logging
from cauce.core.observability.redact import redact_event, redact_text
from tests.conftest import make_settings


@pytest.fixture
def log_stream(tmp_path: Path) -> Iterator[io.StringIO]:
    """Capture JSON log lines; restore the default logging afterwards."""
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log={"format": "json", "level": "info"}), stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    """Parsed JSON log lines."""
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("contact maria.garcia@example.es now", "maria.garcia@example.es"),
        ("llamar al +34 612 345 678", "612 345 678"),
        ("tel 612-34-56-78 ok", "612-34-56-78"),
        ("key cauce_abcdefghijkl_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ used", "ZZZZZZZZ"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ],
)
def test_redact_text_hides_personal_data(text: str, hidden: str) -> None:
    """Emails, phones, API keys and bearer tokens are masked."""
    assert hidden not in redact_text(text)


@pytest.mark.parametrize(
    "text", ["GET /v1/me 200 in 3.2 ms", "peer 192.168.100.200:8000", "2026-11-28T04:26:55Z"]
)
def test_redact_text_keeps_ordinary_text(text: str) -> None:
    """IP addresses, timestamps and short numbers are not mistaken for phones."""
    assert redact_text(text) == text


@given(
    local=st.from_regex(r"[a-z][a-z0-9._]{0,15}", fullmatch=True),
    domain=st.from_regex(r"[a-z]{2,10}\.(es|com|mx|ar)", fullmatch=True),
    before=st.text(alphabet=st.characters(categories=["L", "Zs"]), max_size=20),
)
def test_any_email_is_masked(local: str, domain: str, before: str) -> None:
    """Whatever surrounds it, an email never survives redaction."""
    email = f"{local}@{domain}"
    assert email not in redact_text(f"{before} {email} tail")


def test_exceptions_in_logs_are_masked(log_stream: io.StringIO) -> None:
    """A traceback carrying an email or a key is redacted like any other field."""
    try:
        raise ValueError("rejected ana@example.es with cauce_abcdefghijkl_" + "Q" * 32)
    except ValueError:
        structlog.get_logger("t").exception("boom", path="/v1/leads/ana@example.es")
    text = log_stream.getvalue()
    assert "ana@example.es" not in text
    assert "Q" * 32 not in text
    assert "ValueError" in text


def test_secret_fields_are_masked() -> None:
    """Fields named like secrets are replaced whatever their value."""
    event = redact_event(
        None,
        "info",
        {"event": "x", "password": "hunter2", "headers": {"Authorization": "x"}, "count": 3},
    )
    assert event["password"] == "[redacted]"
    assert event["headers"] == {"Authorization": "[redacted]"}
    assert event["count"] == 3


async def test_request_logs_carry_request_id_and_no_pii(
    settings: Settings, log_stream: io.StringIO
) -> None:
    """The access line carries route template, status and request id, and the stdlib joins in."""
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/healthz", headers={"x-request-id": "req-1"})
    logging.getLogger("some.library").warning("write to juan@example.com failed")
    records = lines(log_stream)
    access = [r for r in records if r.get("event") == "http.request"]
    assert access[0]["request_id"] == "req-1"
    assert access[0]["route"] == "/healthz"
    assert access[0]["status"] == 200
    library = [r for r in records if r.get("logger") == "some.library"]
    assert library[0]["event"] == "write to [email] failed"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Spans finished during the test."""
    return InMemorySpanExporter()


@pytest.fixture
async def traced_app(settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[FastAPI]:
    """The app with tracing on, exporting to memory."""
    app = create_app(settings, span_exporter=exporter)
    async with LifespanManager(app):
        yield app


async def test_requests_and_queries_are_traced(
    traced_app: FastAPI, exporter: InMemorySpanExporter, log_stream: io.StringIO
) -> None:
    """A request makes a server span, its database queries child spans, its logs the trace id."""
    created = await traced_app.state.resources.api_keys.create("n", ["leads:read"])
    exporter.clear()
    transport = httpx.ASGITransport(app=traced_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/v1/me", headers={"authorization": f"Bearer {created.token}"})
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.name == "GET /v1/me"]
    assert server, [s.name for s in spans]
    trace_id = server[0].context.trace_id
    db_spans = [
        s
        for s in spans
        if (s.attributes and "db.statement" in s.attributes)
        or (s.attributes and "db.query.text" in s.attributes)
    ]
    assert db_spans, [s.name for s in spans]
    assert all(s.context.trace_id == trace_id for s in db_spans)
    access = [r for r in lines(log_stream) if r.get("event") == "http.request"]
    assert access[-1]["trace_id"] == format(trace_id, "032x")


async def test_metrics_by_route_template(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Requests are counted by route template and status; build info and pool are exposed."""
    await client.get("/healthz")
    await client.get("/v1/me")
    await client.get("/no/such/thing/123")
    body = (await client.get("/metrics")).text
    assert 'cauce_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in body
    assert 'cauce_http_requests_total{method="GET",route="/v1/me",status="401"} 1.0' in body
    assert 'route="<unmatched>",status="404"' in body
    assert "/no/such/thing" not in body
    assert "cauce_http_request_duration_seconds_bucket" in body
    assert "cauce_build_info{" in body
    assert 'cauce_db_pool_connections{state="in_use"}' in body


async def test_readyz_ok_and_503_naming_failure(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Readiness is 200 when every check passes and 503 naming the failed one otherwise."""
    ok = await client.get("/readyz")
    assert ok.status_code == 200
    checks = ok.json()["checks"]
    assert ok.json()["status"] == "ready"
    assert checks["database"] == "ok"
    assert checks["jobs"]["status"] == "ok"

    async def broken() -> None:
        raise ConnectionRefusedError("redis down")

    app.state.resources.health_checks["redis"] = broken
    failed = await client.get("/readyz")
    assert failed.status_code == 503
    body = failed.json()
    assert body["code"] == "not_ready"
    assert (body["checks"]["database"], body["checks"]["redis"]) == ("ok", "failed")
    assert "redis" in body["detail"]


async def test_readyz_503_when_database_is_gone(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    """With the database unreachable, readiness fails and names it."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    broken_url = (
        f"sqlite+aiosqlite:///{blocker}/x.db"
        if backend == "sqlite"
        else "postgresql+psycopg://nobody:x@127.0.0.1:1/none"
    )
    engine = create_async_engine(broken_url)
    app = create_app(settings)
    async with LifespanManager(app):
        broken = Database(engine, async_sessionmaker(engine))
        app.state.resources.health_checks["database"] = broken.ping
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
    await engine.dispose()
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "failed"


async def test_readyz_503_when_the_data_disk_is_almost_full(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk refuses every write while reads (the database's check) still pass: the
    disk check fails below 64 MiB free on the data directory's file system."""
    assert (await client.get("/readyz")).json()["checks"]["disk"] == "ok"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=1024**2))
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert (body["checks"]["database"], body["checks"]["disk"]) == ("ok", "failed")
    assert "disk (DataDiskFull)" in body["detail"]


async def test_openapi_lists_routes_and_auth(client: httpx.AsyncClient) -> None:
    """The OpenAPI document and interactive docs are served, with the bearer scheme."""
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/me" in spec["paths"]
    assert "ApiKey" in spec["components"]["securitySchemes"]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    # Every error answer refers to one shared Problem schema (a client generates one type).
    errors = [
        answer["content"]["application/problem+json"]["schema"]
        for path in spec["paths"].values()
        for operation in path.values()
        for answer in operation.get("responses", {}).values()
        if "application/problem+json" in answer.get("content", {})
    ]
    assert len(errors) > 20
    assert all(e == {"$ref": "#/components/schemas/Problem"} for e in errors), errors
    assert set(spec["components"]["schemas"]["Problem"]["required"]) >= {"status", "code"}


async def test_a_started_app_collects_young_garbage_rarely(app: FastAPI) -> None:
    """Once an app has started, the collector's youngest pass waits for
    YOUNG_COLLECTION_THRESHOLD allocations (700 by default: ~5 % of a lead intake went to
    passes that found next to nothing), and what existed at start-up is frozen."""
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD > 700
    assert gc.get_freeze_count() > 0


async def test_server_spans_keep_no_query_values(
    traced_app: FastAPI, exporter: InMemorySpanExporter
) -> None:
    """A search's terms (the GDPR look-up of a person by email) never reach the tracing
    backend: a server span's URL keeps the query's parameter names, not their values."""
    created = await traced_app.state.resources.api_keys.create("n", ["leads:read"])
    exporter.clear()
    transport = httpx.ASGITransport(app=traced_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(
            "/v1/leads",
            params={"q": "ana.garcia@example.es", "country": "ES"},
            headers={"authorization": f"Bearer {created.token}"},
        )
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.name == "GET /v1/leads"]
    assert server, [s.name for s in spans]
    attributes = dict(server[0].attributes or {})
    assert attributes.get("http.url") == "http://t/v1/leads?q=REDACTED&country=REDACTED"
    every_value = " ".join(str(v) for s in spans for v in (s.attributes or {}).values())
    assert "ana.garcia" not in every_value
    assert "example.es" not in every_value
    # A value with an escaped `&`, and a query that is a value alone (no name).
    exporter.clear()
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for query in ("q=ana%26garcia%40example.es", "ana.garcia@example.es"):
            await client.get(
                f"/v1/leads?{query}", headers={"authorization": f"Bearer {created.token}"}
            )
    urls = [
        s.attributes.get("http.url")
        for s in exporter.get_finished_spans()
        if s.name == "GET /v1/leads" and s.attributes
    ]
    assert urls == ["http://t/v1/leads?q=REDACTED", "http://t/v1/leads?REDACTED=REDACTED"]

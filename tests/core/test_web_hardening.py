"""The web layer's hardening: compact logs in a database outage, access lines that say
why a request failed and who sent it, security headers, no Host-built redirects, and a
docs page whose scripts are pinned and integrity-checked."""

from __future__ import annotations

import base64
import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cauce.app import create_app
from cauce.core.config import Settings
from cauce.core.db.unavailable import database_unavailable
from cauce.core.observability.logging import LogThrottle, configure_logging
from cauce.core.observability.metrics import HttpMetrics, build_registry
from cauce.core.web.middleware import RequestContextMiddleware
from cauce.core.web.routing import CauceRoute
from cauce.core.web.system import (
    SWAGGER_UI_CSS,
    SWAGGER_UI_CSS_SRI,
    SWAGGER_UI_JS,
    SWAGGER_UI_JS_SRI,
    SWAGGER_UI_VERSION,
    docs_page,
)
from tests.conftest import make_settings


def _outage() -> OperationalError:
    return OperationalError(
        "SELECT secret FROM t", {}, Exception("server closed the connection unexpectedly")
    )


def _test_router() -> APIRouter:
    router = APIRouter(prefix="/v1/test", route_class=CauceRoute)

    @router.get("/bug")
    async def bug() -> None:
        raise RuntimeError("boom")

    @router.get("/database-gone")
    async def database_gone() -> None:
        raise _outage()

    @router.get("/pool-exhausted")
    async def pool_exhausted() -> None:
        # Every pooled connection busy with slow work past the pool's timeout.
        raise PoolTimeout("QueuePool limit of size 5 overflow 10 reached, timed out")

    @router.get("/cached")
    async def cached() -> Response:
        return Response(
            b"{}", media_type="application/json", headers={"cache-control": "max-age=60"}
        )

    return router


@pytest.fixture
def log_stream(tmp_path: Path) -> Iterator[io.StringIO]:
    """JSON log lines at info level, captured; the default logging restored afterwards."""
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log={"format": "json", "level": "info"}), stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def _lines(stream: io.StringIO, event: str | None = None) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [r for r in records if event is None or r.get("event") == event]


@pytest.fixture
def backend() -> str:
    """SQLite only: what is tested here is the web layer, the same on either database."""
    return "sqlite"


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The real app plus routes that fail (a bug, an outage) or set their own caching."""
    application = create_app(settings)
    application.include_router(_test_router())
    async with LifespanManager(application):
        yield application


async def _token(app: FastAPI, *scopes: str) -> dict[str, str]:
    created = await app.state.resources.api_keys.create("t", list(scopes))
    return {"authorization": f"Bearer {created.token}"}


async def test_unexpected_error_logs_its_traceback_once(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    """A bug answers 500 and writes one error line carrying the traceback."""
    response = await client.get("/v1/test/bug", headers={"x-request-id": "bug-1"})
    assert response.status_code == 500
    errors = _lines(log_stream, "http.unhandled_error")
    assert len(errors) == 1
    assert errors[0]["level"] == "error"
    assert errors[0]["request_id"] == "bug-1"
    assert "Traceback" in errors[0]["exception"]
    assert "RuntimeError: boom" in errors[0]["exception"]
    assert sum("Traceback" in line for line in log_stream.getvalue().splitlines()) == 1


async def test_database_outage_logs_one_compact_warning(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    """Requests failing on a lost database answer 503 each, log no traceback, and share
    one short warning naming the error class; each keeps its access line."""
    for _ in range(20):
        response = await client.get("/v1/test/database-gone")
        assert response.status_code == 503
        assert response.json()["code"] == "database_unavailable"
    assert _lines(log_stream, "http.unhandled_error") == []
    assert "Traceback" not in log_stream.getvalue()
    warnings = _lines(log_stream, "http.database_unavailable")
    assert len(warnings) == 1
    warning = warnings[0]
    assert warning["level"] == "warning"
    assert warning["error_class"] == "OperationalError"
    assert warning["driver_error"] == "Exception"
    assert warning["reason"] == "server closed the connection unexpectedly"
    assert warning["route"] == "/v1/test/database-gone"
    assert warning["suppressed"] == 0
    assert "exception" not in warning
    assert "SELECT secret" not in log_stream.getvalue()
    assert len(json.dumps(warning)) < 600
    access = _lines(log_stream, "http.request")
    assert len(access) == 20
    assert {(a["status"], a["code"]) for a in access} == {(503, "database_unavailable")}


def test_log_throttle_counts_what_it_leaves_out() -> None:
    """One line per key per interval; the next line says how many were left out."""
    now = [100.0]
    throttle = LogThrottle(5.0, clock=lambda: now[0])
    assert throttle.admit("a") == 0
    assert [throttle.admit("a") for _ in range(3)] == [None, None, None]
    assert throttle.admit("b") == 0  # another class has its own budget
    now[0] += 4.9
    assert throttle.admit("a") is None
    now[0] += 0.1
    assert throttle.admit("a") == 4
    assert throttle.admit("a") is None
    now[0] += 60
    assert throttle.admit("a") == 1
    assert throttle.admit("b") == 0


async def test_outage_warning_repeats_with_a_count(log_stream: io.StringIO) -> None:
    """After the interval, the outage warning comes again, counting the requests it
    left out (the middleware on its own, with a clock the test moves)."""
    now = [0.0]

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise _outage()

    middleware = RequestContextMiddleware(
        failing,
        metrics=HttpMetrics(build_registry()),
        max_body_bytes=1024,
        unavailable_log_interval=5.0,
        clock=lambda: now[0],
    )
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(3):
            assert (await client.get("/v1/x")).status_code == 503
        now[0] = 6.0
        assert (await client.get("/v1/x")).status_code == 503
    warnings = _lines(log_stream, "http.database_unavailable")
    assert [w["suppressed"] for w in warnings] == [0, 2]


async def test_access_line_names_problem_code_and_client(
    app: FastAPI, client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    """Each error's access line carries the problem's code, and every line the peer's
    address; a success carries no code."""
    auth = await _token(app, "leads:read")
    await client.get("/healthz")
    await client.get("/v1/me")
    await client.get("/v1/me", headers={"authorization": "Bearer cauce_aaaaaaaaaaaa_nope"})
    await client.get("/v1/nothing-here")
    await client.get("/v1/leads", params={"limit": "many"}, headers=auth)
    await client.post("/v1/leads", content=b"{", headers={"content-type": "application/json"})
    await client.post("/v1/leads", content=b"x" * 2_000_000, headers=auth)
    await client.get("/v1/test/bug")
    access = _lines(log_stream, "http.request")
    assert [(a["status"], a.get("code")) for a in access] == [
        (200, None),
        (401, "unauthenticated"),
        (401, "unauthenticated"),
        (404, "not_found"),
        (422, "validation_failed"),
        (401, "unauthenticated"),  # no key: refused before the body is read
        (413, "payload_too_large"),
        (500, "internal_error"),
    ]
    # httpx's in-process transport speaks as 127.0.0.1; uvicorn puts the peer there, and
    # the line keeps its network by default (`http.access_log_client`).
    assert {a["client"] for a in access} == {"127.0.0.0/24"}


async def test_security_headers(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Every answer says nosniff; every /v1 answer (lead JSON, the CSV export, errors)
    is no-store unless its route chose its own caching."""
    auth = await _token(app, "leads:read", "leads:write")
    answers = {
        "health": await client.get("/healthz"),
        "openapi": await client.get("/openapi.json"),
        "me": await client.get("/v1/me", headers=auth),
        "leads": await client.get("/v1/leads", headers=auth),
        "export": await client.get("/v1/leads/export.csv", headers=auth),
        "unauthenticated": await client.get("/v1/leads"),
        "unmatched": await client.get("/v1/nothing-here"),
        "too_large": await client.post("/v1/leads", content=b"x" * 2_000_000, headers=auth),
    }
    for name, response in answers.items():
        assert response.headers.get_list("x-content-type-options") == ["nosniff"], name
    assert answers["export"].status_code == 200
    assert answers["export"].headers["content-type"].startswith("text/csv")
    for name in ("me", "leads", "export", "unauthenticated", "unmatched", "too_large"):
        assert answers[name].headers.get_list("cache-control") == ["no-store"], name
    assert "cache-control" not in answers["health"].headers
    own = await client.get("/v1/test/cached")
    assert own.headers.get_list("cache-control") == ["max-age=60"]


async def test_trailing_slash_is_404_not_a_redirect(client: httpx.AsyncClient) -> None:
    """A path with a trailing slash is not redirected to a Location built from the Host
    header the client chose: it is a 404 problem."""
    for path in ("/v1/leads/", "/healthz/", "/v1/me/"):
        response = await client.get(path, headers={"host": "evil.example"})
        assert response.status_code == 404, path
        assert "location" not in response.headers
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"


async def test_docs_page_pins_swagger_ui_with_integrity(client: httpx.AsyncClient) -> None:
    """/docs loads one release of Swagger UI, each file with its hash and CORS mode,
    and points at the same OpenAPI document."""
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f"swagger-ui-dist@{SWAGGER_UI_VERSION}/" in page
    assert SWAGGER_UI_VERSION.count(".") == 2  # an exact release, not a range like @5
    assert (
        f'<script src="{SWAGGER_UI_JS}" integrity="{SWAGGER_UI_JS_SRI}" '
        'crossorigin="anonymous"></script>'
    ) in page
    assert (
        f'href="{SWAGGER_UI_CSS}" integrity="{SWAGGER_UI_CSS_SRI}" crossorigin="anonymous"' in page
    )
    assert page.count("https://") == 2  # nothing else from another origin
    assert 'url: "/openapi.json"' in page
    for sri in (SWAGGER_UI_JS_SRI, SWAGGER_UI_CSS_SRI):
        algorithm, digest = sri.split("-", 1)
        assert algorithm == "sha384"
        assert len(base64.b64decode(digest, validate=True)) == 48
    assert (await client.head("/docs")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'cauce_http_requests_total{method="GET",route="/docs",status="200"} 1.0' in metrics


def test_docs_page_cannot_be_broken_out_of() -> None:
    """The OpenAPI URL (from the server's root path) is a script string that cannot end
    the script element; the title is escaped."""
    page = docs_page('<b>"x"</b>', "/p</script><script>alert(1)</script>/openapi.json")
    assert page.count("</script>") == 2
    assert "<b>" not in page


async def test_a_pool_with_no_free_connection_is_503_not_500(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    """No connection free within the pool's timeout (40 slow searches held them all, and
    a web form's lead got 500) is the database not answering: 503 with Retry-After."""
    response = await client.get("/v1/test/pool-exhausted")
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert response.headers.get("retry-after")
    assert _lines(log_stream, "http.unhandled_error") == []
    assert len(_lines(log_stream, "http.database_unavailable")) == 1


def test_sqlite_bugs_are_not_outages() -> None:
    """SQLite reports a wrong statement as an OperationalError too: that is a bug (500,
    with its traceback), while a locked, full or unreadable database is an outage (503)."""

    def wrapped(message: str) -> OperationalError:
        return OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))

    for outage in (
        "database is locked",
        "database or disk is full",
        "disk I/O error",
        "unable to open database file",
        "attempt to write a readonly database",
    ):
        assert database_unavailable(wrapped(outage)), outage
    for bug in (
        "no such column: leads.nope",
        'near "SELEC": syntax error',
        "too many SQL variables",
        "no such table: nope",
    ):
        assert not database_unavailable(wrapped(bug)), bug

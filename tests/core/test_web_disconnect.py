"""The request middleware's edges, on both databases: a client gone mid-body is recorded
as a 499 (not a 500 with a traceback), an encoded body is a 415, and no problem detail
sends a client's huge value back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, Request
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.responses import Response
from structlog.testing import capture_logs

from cauce.app import create_app
from cauce.core.config import Settings
from cauce.core.errors import NotFound
from cauce.core.web.middleware import CLIENT_CLOSED_REQUEST
from cauce.core.web.problems import DETAIL_LIMIT, ECHO_LIMIT, echo
from cauce.core.web.routing import CauceRoute
from tests.asgi_client import post_then_vanish, posts_counted

ERROR_LEVELS = ("error", "critical", "exception")


class Thing(BaseModel):
    """A body FastAPI parses itself (as the jobs API's are)."""

    name: str


def _test_router() -> APIRouter:
    router = APIRouter(prefix="/v1/test", route_class=CauceRoute)

    @router.post("/raw")
    async def raw(request: Request) -> Response:
        """Reads its body by hand, as the leads intake does."""
        return Response(await request.body(), media_type="application/json")

    @router.post("/declared")
    async def declared(thing: Thing) -> Thing:
        return thing

    @router.get("/missing/{what}")
    async def missing(what: str) -> None:
        raise NotFound(f"no thing named {what}")

    return router


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The real app plus routes that read a body in both ways."""
    application = create_app(settings)
    application.include_router(_test_router())
    async with LifespanManager(application):
        yield application


@pytest.mark.parametrize("route", ["/v1/test/raw", "/v1/test/declared"])
async def test_a_client_gone_mid_body_is_a_499_not_a_500(
    app: FastAPI, client: httpx.AsyncClient, route: str
) -> None:
    """A body cut short by a client that left is logged at info as
    `http.client_disconnected`, with no error and no traceback, and counted as status
    499, whether the handler reads the body itself or FastAPI parses it (and calls it a
    400)."""
    with capture_logs() as logs:
        answered = await post_then_vanish(app, route, [b'{"name": "a', b"bc"], declared=100)
    assert not [e for e in logs if e["log_level"] in ERROR_LEVELS or "exc_info" in e], logs
    assert [e["log_level"] for e in logs if e["event"] == "http.client_disconnected"] == ["info"]
    assert [e["status"] for e in logs if e["event"] == "http.request"] == [CLIENT_CLOSED_REQUEST]
    if route == "/v1/test/raw":
        assert not answered  # nobody is left to read one
    metrics = (await client.get("/metrics")).text
    assert posts_counted(metrics, route, 499) == 1
    assert posts_counted(metrics, route, 500) == 0
    assert posts_counted(metrics, route, 400) == 0


async def test_a_client_gone_after_its_body_is_answered_as_usual(app: FastAPI) -> None:
    """A disconnect after the whole body arrived (a server may report one while the
    handler works) is no 499: the request is answered and recorded as it went."""
    with capture_logs() as logs:
        answered = await post_then_vanish(
            app, "/v1/test/raw", [b'{"name": "abc"}'], declared=15, finished=True
        )
    assert answered[0]["status"] == 200
    assert [e["status"] for e in logs if e["event"] == "http.request"] == [200]
    assert not [e for e in logs if e["event"] == "http.client_disconnected"]


@pytest.mark.parametrize("coding", ["gzip", "br", "x-gzip", "identity, gzip", " Deflate "])
@pytest.mark.parametrize("route", ["/v1/test/raw", "/v1/test/declared"])
async def test_an_encoded_body_is_a_415(client: httpx.AsyncClient, route: str, coding: str) -> None:
    """A body with a Content-Encoding other than identity is refused before any handler
    reads it: 415 `unsupported_content_encoding` with `Accept-Encoding: identity`."""
    response = await client.post(
        route,
        content=b"\x1f\x8b\x08\x00 not json to anyone",
        headers={"content-type": "application/json", "content-encoding": coding},
    )
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["accept-encoding"] == "identity"
    problem = response.json()
    assert problem["code"] == "unsupported_content_encoding"
    assert problem["type"] == "urn:cauce:problem:unsupported_content_encoding"
    assert problem["title"] == "Unsupported content encoding"
    assert coding.strip() in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b"\x1f\x8b\x08\x00"

    chunked = await client.post(
        route,
        content=chunks(),
        headers={"content-type": "application/json", "content-encoding": coding},
    )
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert chunked.status_code == 415, chunked.text


async def test_identity_or_no_body_passes_whatever_the_encoding(client: httpx.AsyncClient) -> None:
    """`Content-Encoding: identity` is a plain body; a request without a body is not
    refused for the header."""
    plain = await client.post(
        "/v1/test/declared",
        content=b'{"name": "abc"}',
        headers={"content-type": "application/json", "content-encoding": "identity"},
    )
    assert plain.status_code == 200, plain.text
    assert (await client.get("/healthz", headers={"content-encoding": "gzip"})).status_code == 200
    empty = await client.post(
        "/v1/test/raw",
        headers={"content-encoding": "gzip", "content-length": "0"},
    )
    assert empty.status_code == 200, empty.text


async def test_a_detail_echoing_a_huge_value_is_cut(client: httpx.AsyncClient) -> None:
    """A problem's detail is held to `DETAIL_LIMIT` characters, ending in "…", even when
    an error quotes a client's 5,000-character value whole."""
    response = await client.get(f"/v1/test/missing/{'x' * 5000}")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert len(detail) == DETAIL_LIMIT + 1
    assert detail.startswith("no thing named xxx")
    assert detail.endswith("x…")
    short = await client.get("/v1/test/missing/abc")
    assert short.json()["detail"] == "no thing named abc"


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_echo_keeps_a_short_value_and_cuts_a_long_one(value: str, limit: int) -> None:
    """`echo` returns a value of at most `limit` characters as it is, and a longer one's
    first `limit` characters followed by "…"."""
    shown = echo(value, limit)
    if len(value) <= limit:
        assert shown == value
    else:
        assert shown == value[:limit] + "…"
    assert echo("a" * (ECHO_LIMIT + 1)) == "a" * ECHO_LIMIT + "…"

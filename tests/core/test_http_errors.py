"""Every error a client can meet is RFC 9457 problem+json with a stable code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from cauce.app import create_app
from cauce.core.config import Settings
from cauce.core.security.apikeys import Principal
from cauce.core.security.models import ApiKey
from cauce.core.web.auth import require_scope
from cauce.core.web.routing import CauceRoute

PROBLEM = "application/problem+json"


class Thing(BaseModel):
    """A small strict payload."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=20)
    size: int = Field(ge=0)


def _test_router() -> APIRouter:
    router = APIRouter(prefix="/v1/test", route_class=CauceRoute)

    @router.post("/things", status_code=201)
    async def create_thing(
        thing: Thing, _p: Annotated[Principal, Depends(require_scope("leads:write"))]
    ) -> Thing:
        return thing

    @router.post("/write-then-fail")
    async def write_then_fail(
        _p: Annotated[Principal, Depends(require_scope("leads:write"))],
    ) -> None:
        raise RuntimeError("boom: secret internals at /srv/cauce/app.py line 42")

    @router.post("/database-gone")
    async def database_gone(
        _p: Annotated[Principal, Depends(require_scope("leads:write"))],
    ) -> None:
        raise OperationalError(
            "SELECT secret FROM t", {}, Exception("server closed the connection unexpectedly")
        )

    return router


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The real app plus a test router exercising bodies and failures."""
    application = create_app(
        settings.model_copy(
            update={"http": settings.http.model_copy(update={"max_body_bytes": 2048})}
        )
    )
    application.include_router(_test_router())
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def token(app: FastAPI) -> str:
    """A key allowed to write."""
    created = await app.state.resources.api_keys.create("writer", ["leads:write"])
    return str(created.token)


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:cauce:problem:{code}"
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    """An unknown path answers 404 problem+json."""
    _assert_problem(await client.get("/v1/nothing-here"), 404, "not_found")


async def test_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    """A known path with the wrong method answers 405 with an Allow header."""
    response = await client.delete("/healthz")
    _assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_valid_body_is_accepted(client: httpx.AsyncClient, token: str) -> None:
    """The control case: a valid JSON body reaches the handler."""
    response = await client.post(
        "/v1/test/things",
        json={"name": "a", "size": 1},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201
    assert response.json() == {"name": "a", "size": 1}


async def test_unknown_field_is_422_with_pointer(client: httpx.AsyncClient, token: str) -> None:
    """Extra fields are refused, each error naming its JSON pointer."""
    response = await client.post(
        "/v1/test/things",
        json={"name": "", "size": -1, "colour": "red"},
        headers={"authorization": f"Bearer {token}"},
    )
    body = _assert_problem(response, 422, "validation_failed")
    pointers = {e["pointer"] for e in body["errors"]}  # type: ignore[attr-defined]
    assert pointers == {"/name", "/size", "/colour"}


async def test_malformed_json_is_400(client: httpx.AsyncClient, token: str) -> None:
    """Broken JSON is a 400 malformed_body, not a 500 or a generic 422."""
    response = await client.post(
        "/v1/test/things",
        content=b'{"name": "a", ',
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    body = _assert_problem(response, 400, "malformed_body")
    # Where the parser stopped, pointing at the whole body.
    assert body["errors"] == [
        {
            "pointer": "",
            "detail": "Expecting property name enclosed in double quotes at offset 14",
            "type": "json_invalid",
        }
    ]


async def test_wrong_content_type_is_415(client: httpx.AsyncClient, token: str) -> None:
    """A form or text body sent to a JSON route answers 415."""
    for ctype in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = await client.post(
            "/v1/test/things",
            content=b"name=a",
            headers={"authorization": f"Bearer {token}", "content-type": ctype},
        )
        _assert_problem(response, 415, "unsupported_media_type")


async def test_json_suffix_media_type_is_accepted(client: httpx.AsyncClient, token: str) -> None:
    """`application/merge-patch+json` style types count as JSON."""
    response = await client.post(
        "/v1/test/things",
        content=b'{"name": "a", "size": 2}',
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/vnd.x+json; charset=utf-8",
        },
    )
    assert response.status_code == 201


async def test_oversized_body_is_413(client: httpx.AsyncClient, token: str) -> None:
    """A declared Content-Length over the limit is refused before the body is read."""
    response = await client.post(
        "/v1/test/things",
        json={"name": "a", "size": 1, "pad": "x" * 5000},
        headers={"authorization": f"Bearer {token}"},
    )
    _assert_problem(response, 413, "payload_too_large")


async def test_oversized_streamed_body_is_413(client: httpx.AsyncClient, token: str) -> None:
    """A chunked body without Content-Length is cut off at the limit too."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "a", "pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    response = await client.post(
        "/v1/test/things",
        content=chunks(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    _assert_problem(response, 413, "payload_too_large")


async def test_unexpected_error_is_500_without_internals(
    client: httpx.AsyncClient, token: str
) -> None:
    """An unhandled exception answers a generic 500 problem; no traceback or message leaks."""
    response = await client.post(
        "/v1/test/write-then-fail", headers={"authorization": f"Bearer {token}"}
    )
    body = _assert_problem(response, 500, "internal_error")
    text = response.text
    assert "boom" not in text
    assert "Traceback" not in text
    assert "/srv/cauce" not in text
    assert body["detail"]


async def test_lost_database_is_503_with_retry_after(client: httpx.AsyncClient, token: str) -> None:
    """A database that stopped answering is the client's cue to retry: 503 with
    Retry-After, and nothing of the statement or the driver's message."""
    response = await client.post(
        "/v1/test/database-gone", headers={"authorization": f"Bearer {token}"}
    )
    _assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"
    assert "secret" not in response.text
    assert "server closed" not in response.text


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    """A well-formed X-Request-ID is returned as is; a missing or hostile one is replaced."""
    response = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = (await client.get("/healthz")).headers["x-request-id"]
    assert len(generated) == 32
    hostile = (await client.get("/healthz", headers={"x-request-id": "a\tb" * 100})).headers
    assert hostile["x-request-id"] != "a\tb" * 100


async def test_failed_request_writes_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A refused request leaves the database as it was."""
    db = app.state.resources.db
    async with db.sessionmaker() as session:
        before = await session.scalar(select(func.count()).select_from(ApiKey))
    await client.post("/v1/test/things", json={"bad": 1})
    async with db.sessionmaker() as session:
        after = await session.scalar(select(func.count()).select_from(ApiKey))
    assert before == after

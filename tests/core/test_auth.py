"""API keys: creation, hashing, scopes, revocation, caching."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy import select

from cauce.app import create_app
from cauce.core.config import Settings
from cauce.core.errors import BadRequest, NotFound, Unauthenticated
from cauce.core.security.apikeys import ApiKeyService, Principal
from cauce.core.security.models import ApiKey
from cauce.core.web.auth import require_scope
from cauce.core.web.routing import CauceRoute


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app plus one route that needs `jobs:admin`."""
    application = create_app(settings)
    router = APIRouter(prefix="/v1/test", route_class=CauceRoute)

    @router.get("/admin-only")
    async def admin_only(
        p: Annotated[Principal, Depends(require_scope("jobs:admin"))],
    ) -> dict[str, str]:
        return {"name": p.name}

    application.include_router(router)
    async with LifespanManager(application):
        yield application


def keys(app: FastAPI) -> ApiKeyService:
    """The app's key service."""
    service: ApiKeyService = app.state.resources.api_keys
    return service


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"authorization": f"Bearer {token}"}


async def test_created_key_calls_me(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A new key is recognisable and /v1/me answers its name and scopes."""
    created = await keys(app).create("crm-sync", ["leads:read", "leads:write"])
    assert created.token.startswith("cauce_")
    response = await client.get("/v1/me", headers=bearer(created.token))
    assert response.status_code == 200
    assert response.json() == {
        "key_id": created.key_id,
        "name": "crm-sync",
        "scopes": ["leads:read", "leads:write"],
    }


async def test_key_is_stored_only_as_hash(app: FastAPI) -> None:
    """The database never holds the key itself."""
    created = await keys(app).create("n", ["admin"])
    async with app.state.resources.db.sessionmaker() as session:
        row = (await session.scalars(select(ApiKey))).one()
    secret_part = created.token.split("_", 2)[2]
    stored = " ".join(str(v) for v in (row.key_id, row.name, row.key_hash, row.scopes))
    assert secret_part not in stored
    assert created.token not in stored
    assert len(row.key_hash) == 64


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer cauce_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    ],
)
async def test_missing_or_unknown_key_is_401(client: httpx.AsyncClient, header: str | None) -> None:
    """No key, a malformed header or an unknown key answers 401 problem+json."""
    headers = {"authorization": header} if header else {}
    response = await client.get("/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthenticated"


async def test_tampered_secret_is_401(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A real key id with a wrong secret is refused."""
    created = await keys(app).create("n", ["admin"])
    last = created.token[-1]
    forged = created.token[:-1] + ("A" if last != "A" else "B")
    assert (await client.get("/v1/me", headers=bearer(forged))).status_code == 401


async def test_missing_scope_is_403(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A valid key without the route's scope answers 403 naming the scope."""
    created = await keys(app).create("reader", ["leads:read"])
    response = await client.get("/v1/test/admin-only", headers=bearer(created.token))
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert response.json()["required_scope"] == "jobs:admin"


async def test_admin_scope_grants_everything(app: FastAPI, client: httpx.AsyncClient) -> None:
    """`admin` passes every scope check."""
    created = await keys(app).create("root", ["admin"])
    response = await client.get("/v1/test/admin-only", headers=bearer(created.token))
    assert response.status_code == 200


async def test_revoked_key_is_401(app: FastAPI, client: httpx.AsyncClient) -> None:
    """After revocation the key no longer works, even though it was cached."""
    created = await keys(app).create("n", ["leads:read"])
    assert (await client.get("/v1/me", headers=bearer(created.token))).status_code == 200
    await keys(app).revoke(created.key_id)
    assert (await client.get("/v1/me", headers=bearer(created.token))).status_code == 401


async def test_revoking_an_unknown_key_names_it_as_given_never_a_secret(app: FastAPI) -> None:
    """An id is named as typed (`KEY_ID` was named `KEY`); of a whole token only its id."""
    with pytest.raises(NotFound, match=r"^no API key with id KEY_ID$"):
        await keys(app).revoke("KEY_ID")
    with pytest.raises(NotFound, match=r"^no API key with id nosuch$") as refused:
        await keys(app).revoke("cauce_nosuch_s3cr3tpart")
    assert "s3cr3t" not in str(refused.value)


async def test_revocation_reaches_other_processes_within_ttl(settings: Settings) -> None:
    """A second service (another process) drops a revoked key once its cache entry expires."""
    from cauce.core.db import create_database

    now = [1000.0]
    db = create_database(settings)
    secret = settings.secret_key.get_secret_value().encode()
    here = ApiKeyService(db.sessionmaker, secret, cache_ttl=5.0)
    elsewhere = ApiKeyService(db.sessionmaker, secret, cache_ttl=5.0, clock=lambda: now[0])
    try:
        created = await here.create("n", ["leads:read"])
        assert (await elsewhere.verify(created.token)).name == "n"
        await here.revoke(created.key_id)
        now[0] += 4.0  # still cached: a bounded, documented window
        assert (await elsewhere.verify(created.token)).name == "n"
        now[0] += 1.5
        with pytest.raises(Unauthenticated):
            await elsewhere.verify(created.token)
    finally:
        await db.dispose()


async def test_concurrent_misses_share_one_lookup(settings: Settings) -> None:
    """When a key's cache entry is gone, 20 requests at once make one database look-up
    (and none of them a write while the last-used stamp is fresh); a bad key still fails
    every request that shares its look-up."""
    import asyncio

    from sqlalchemy import event

    from cauce.core.db import create_database

    db = create_database(settings)
    service = ApiKeyService(db.sessionmaker, settings.secret_key.get_secret_value().encode())
    statements: list[str] = []

    def count(_c: object, _cur: object, statement: str, *_: object) -> None:
        if "api_keys" in statement:
            statements.append(statement.split()[0])

    try:
        created = await service.create("n", ["leads:read"])
        assert (await service.verify(created.token)).name == "n"  # stamps last_used_at
        service._cache.clear()
        event.listen(db.engine.sync_engine, "before_cursor_execute", count)
        found = await asyncio.gather(*(service.verify(created.token) for _ in range(20)))
        assert {p.name for p in found} == {"n"}
        assert statements == ["SELECT"]
        wrong = created.token[:-4] + "zzzz"
        failed = await asyncio.gather(
            *(service.verify(wrong) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(f, Unauthenticated) for f in failed)
        assert statements == ["SELECT", "SELECT"]
    finally:
        await db.dispose()


async def test_last_used_is_recorded(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Using a key stamps its last-used time."""
    created = await keys(app).create("n", ["leads:read"])
    assert (await keys(app).list())[0].last_used_at is None
    await client.get("/v1/me", headers=bearer(created.token))
    assert (await keys(app).list())[0].last_used_at is not None


async def test_create_validates_input(app: FastAPI) -> None:
    """Unknown scopes, no scopes and empty names are refused; revoking a stranger is 404."""
    with pytest.raises(BadRequest, match="unknown scope"):
        await keys(app).create("n", ["leads:read", "root:all"])
    with pytest.raises(BadRequest, match="at least one scope"):
        await keys(app).create("n", [" "])
    with pytest.raises(BadRequest, match="name"):
        await keys(app).create("  ", ["admin"])
    with pytest.raises(NotFound):
        await keys(app).revoke("zzzzzzzzzzzz")
    assert await keys(app).list() == []


def test_scope_check_is_one_dependency_declared_as_bearer_security() -> None:
    """A scoped route's OpenAPI entry names the bearer scheme, and FastAPI solves its check
    as one dependency of the request alone (a nested `HTTPBearer` cost ~20 us a request)."""
    application = FastAPI()
    router = APIRouter(route_class=CauceRoute)

    @router.get("/scoped")
    async def scoped(p: Annotated[Principal, Depends(require_scope("leads:read"))]) -> str:
        return p.name

    (route,) = router.routes
    assert isinstance(route, CauceRoute)
    (check,) = route.dependant.dependencies
    assert check.dependencies == []
    assert check.path_params + check.query_params + check.header_params == []
    application.include_router(router)
    document = application.openapi()
    assert document["paths"]["/scoped"]["get"]["security"] == [{"ApiKey": []}]
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer cauce_...`",
    }

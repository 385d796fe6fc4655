"""Security fixes: redirects keep every credential on its origin, Cauce's files are its
own (0600, directories 0700), the jobs filters refuse instants with no UTC form (422),
and a failed statement's error carries no bound values."""

from __future__ import annotations

import os
import random
import stat
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from cauce.app import Resources
from cauce.core.config import Settings
from cauce.core.db import create_database
from cauce.core.db.engine import private_dir
from cauce.core.http import HttpClients, Request
from cauce.core.resilience import FakeClock
from cauce.leads.adapters.pipedrive import PipedriveCrm
from cauce.leads.imports_upload import imports_dir, store_upload
from cauce.leads.learned import ModelStore, train
from cauce.leads.ports import OBJECT_ID, CrmKey
from cauce.leads.schemas_requests import ImportOptionsIn
from cauce.leads.service import LeadsRuntime
from cauce.leads.synthetic import synthetic_leads, training_examples
from tests.conftest import SettingsFactory, make_settings
from tests.core.http.conftest import fast_policy
from tests.core.http.upstream import Reply, ScriptedServer

# --- 1. redirects -----------------------------------------------------------------------

CREDENTIALS = {
    "Authorization": "Bearer s3cret",
    "x-api-token": "pd-s3cret",
    "api-key": "k-s3cret",
    "X-Auth-Token": "a-s3cret",
    "Cookie": "session=s3cret",
    "X-Cauce-Signature": "sig-s3cret",
}
HARMLESS = {"Accept": "application/json", "Accept-Language": "es"}


@pytest.fixture
async def servers() -> AsyncIterator[tuple[ScriptedServer, ScriptedServer]]:
    """Two local servers: two origins (same address, other ports)."""
    first, second = await ScriptedServer().start(), await ScriptedServer().start()
    yield first, second
    await first.stop()
    await second.stop()


@pytest.fixture
async def clients() -> AsyncIterator[HttpClients]:
    """Guarded clients with fast retries and a fake clock."""
    built = HttpClients(default_policy=fast_policy(), clock=FakeClock(), rng=random.Random(7))
    yield built
    await built.close()


def _secrets_in(headers: dict[str, str]) -> list[str]:
    return [name for name, value in headers.items() if "s3cret" in value]


async def test_a_cross_origin_redirect_carries_no_credential_of_any_name(
    servers: tuple[ScriptedServer, ScriptedServer], clients: HttpClients
) -> None:
    """A 307 to another origin keeps the body, its type, the idempotency key and the
    harmless headers, and drops every other header the caller set, whatever its name."""
    first, second = servers
    first.script("/w", Reply(307, headers={"Location": second.url("/elsewhere")}))
    await clients.get("crm").send(
        Request.post(
            first.url("/w"),
            json={"a": 1},
            headers=CREDENTIALS | HARMLESS,
            idempotency_key="idem-1",
        )
    )
    assert _secrets_in(first.requests("/w")[0].headers) != []
    seen = second.requests("/elsewhere")[0]
    assert _secrets_in(seen.headers) == [], seen.headers
    assert (seen.method, seen.body) == ("POST", b'{"a":1}')
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["idempotency-key"] == "idem-1"
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["accept-language"] == "es"
    assert seen.headers["user-agent"].startswith("cauce/")


async def test_same_origin_redirects_keep_the_credentials(
    servers: tuple[ScriptedServer, ScriptedServer], clients: HttpClients
) -> None:
    """Hops on the caller's origin keep every header it set."""
    first, _ = servers
    first.script("/a", Reply(302, headers={"Location": "/b"}))
    first.script("/b", Reply(307, headers={"Location": first.url("/c")}))
    await clients.get("crm").send(Request.get(first.url("/a"), headers=CREDENTIALS))
    for path in ("/b", "/c"):
        seen = first.requests(path)[0].headers
        assert {k.lower(): v for k, v in CREDENTIALS.items()}.items() <= seen.items(), path


async def test_credentials_dropped_once_stay_dropped_back_on_the_first_origin(
    servers: tuple[ScriptedServer, ScriptedServer], clients: HttpClients
) -> None:
    """A chain that leaves the origin and comes back does not get the credentials back:
    the other origin chose where it sent the request."""
    first, second = servers
    first.script("/out", Reply(307, headers={"Location": second.url("/bounce")}))
    second.script("/bounce", Reply(307, headers={"Location": first.url("/back")}))
    await clients.get("crm").send(Request.get(first.url("/out"), headers=CREDENTIALS))
    assert _secrets_in(second.requests("/bounce")[0].headers) == []
    assert _secrets_in(first.requests("/back")[0].headers) == []


async def test_the_pipedrive_token_stays_on_the_configured_base_url(
    servers: tuple[ScriptedServer, ScriptedServer], clients: HttpClients
) -> None:
    """The reported case: Pipedrive's `x-api-token`, with a base URL answering 307 to
    another origin, never reaches that origin."""
    first, second = servers
    first.script(
        "/api/v2/persons/42", Reply(307, headers={"Location": second.url("/api/v2/persons/42")})
    )
    second.script("/api/v2/persons/42", Reply(200, json={"success": True, "data": {"id": 42}}))
    crm = PipedriveCrm(
        clients.get("pipedrive"), token="pd-s3cret", base_url=first.origin, cauce_id_property="k"
    )
    assert await crm.delete(CrmKey(OBJECT_ID, "42")) is True
    assert first.requests("/api/v2/persons/42")[0].headers["x-api-token"] == "pd-s3cret"
    seen = second.requests("/api/v2/persons/42")[0].headers
    assert "x-api-token" not in seen
    assert _secrets_in(seen) == []


# --- 2. file modes ----------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask (group and others may read what is created), for this test."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
async def test_a_new_sqlite_database_and_its_wal_are_the_owners_only(tmp_path: Path) -> None:
    """Under umask 022 a new data directory is 0700 (its missing parents too), and the
    database, its -wal and its -shm are 0600."""
    data_dir = tmp_path / "new" / "data"
    settings = make_settings(data_dir)
    db = create_database(settings)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (a TEXT)"))
            await conn.execute(text("INSERT INTO t VALUES ('ana@empresa.es')"))
        async with db.engine.connect() as conn:  # the WAL is there while a connection is
            await conn.execute(text("SELECT * FROM t"))
            files = {p.name: _mode(p) for p in data_dir.iterdir()}
    finally:
        await db.dispose()
    assert _mode(tmp_path / "new") == 0o700
    assert _mode(data_dir) == 0o700
    assert {"cauce.db", "cauce.db-wal", "cauce.db-shm"} <= files.keys(), files
    assert files == dict.fromkeys(files, 0o600), files


@pytest.mark.usefixtures("umask_022")
async def test_an_existing_database_and_the_operators_directory_keep_their_modes(
    tmp_path: Path,
) -> None:
    """A directory the operator made, and a database file already there, are left as
    they are (the operator chose who may read them); what Cauce adds inside is its own."""
    data_dir = tmp_path / "state"
    data_dir.mkdir(mode=0o750)
    (data_dir / "cauce.db").touch(mode=0o640)
    db = create_database(make_settings(data_dir))
    try:
        await db.ping()
    finally:
        await db.dispose()
    assert _mode(data_dir) == 0o750
    assert _mode(data_dir / "cauce.db") == 0o640
    assert _mode(private_dir(data_dir / "imports")) == 0o700
    assert _mode(data_dir) == 0o750


@pytest.mark.usefixtures("umask_022")
async def test_uploads_are_stored_for_the_owner_only(settings: Settings) -> None:
    """Under umask 022 the imports directory is 0700 and an uploaded CSV (personal data)
    0600."""
    rt = LeadsRuntime(settings=settings, sessionmaker=None, queue=None)  # type: ignore[arg-type]

    async def chunks() -> AsyncIterator[bytes]:
        yield b"email\nana@empresa.es\n"

    path, _ = await store_upload(rt, chunks(), ImportOptionsIn())
    assert _mode(imports_dir(rt)) == 0o700
    assert _mode(path) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_model_artefacts_are_stored_for_the_owner_only(tmp_path: Path) -> None:
    """Under umask 022 a saved model's artefact, metadata and the active pointer are
    0600, in 0700 directories."""
    report = train(training_examples(synthetic_leads(600, seed=7)), seed=7)
    store = ModelStore.for_data_dir(tmp_path / "data")
    saved = store.save(report)
    assert saved.version is not None
    store.activate(saved.version)
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(store.root) == 0o700
    assert _mode(store.root.parent) == 0o700
    modes = {p.name: _mode(p) for p in store.root.iterdir()}
    assert modes == {"v1.skops": 0o600, "v1.json": 0o600, "active": 0o600, "claimed": 0o600}


# --- 4. jobs filters ----------------------------------------------------------------------

NO_UTC_FORM = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with a `jobs:admin` key."""
    resources: Resources = app.state.resources
    key = await resources.api_keys.create("ops", ["jobs:admin"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    ) as client:
        yield client


def _names_the_field(response: httpx.Response, name: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    assert [e["type"] for e in body["errors"]] == ["datetime_out_of_range"], body
    assert body["errors"][0]["pointer"].endswith(name), body


@pytest.mark.parametrize("instant", NO_UTC_FORM)
@pytest.mark.parametrize("name", ["created_after", "created_before"])
async def test_an_instant_with_no_utc_form_is_a_422_naming_the_filter(
    admin: httpx.AsyncClient, instant: str, name: str
) -> None:
    """`GET /v1/jobs` and `POST /v1/jobs/retry` refuse a date-time whose UTC time falls
    outside years 1 to 9999 (a 500 before), naming the field."""
    _names_the_field(await admin.get("/v1/jobs", params={name: instant}), name)
    _names_the_field(await admin.post("/v1/jobs/retry", json={name: instant}), name)


async def test_instants_near_the_ends_still_filter(admin: httpx.AsyncClient) -> None:
    """The ends of the range, given with offsets that keep them in it, are taken."""
    listed = await admin.get(
        "/v1/jobs",
        params={
            "created_after": "0001-01-01T00:00:00-01:00",
            "created_before": "9999-12-31T23:59:59+01:00",
        },
    )
    assert listed.status_code == 200, listed.text


# --- 5. bound values in errors ----------------------------------------------------------

SECRET = "ana.secreta@empresa.es"


async def _failing_insert(settings: Settings) -> BaseException:
    db = create_database(settings)
    try:
        async with db.engine.connect() as conn:
            await conn.execute(
                text("INSERT INTO no_such_table (email) VALUES (:email)"), {"email": SECRET}
            )
    except Exception as exc:  # noqa: BLE001 - the error itself is under test
        return exc
    finally:
        await db.dispose()
    raise AssertionError("the statement should have failed")


async def test_a_failed_statement_shows_no_bound_values(settings: Settings) -> None:
    """The error of a failed statement (as logged: its text and traceback) says where
    the values went, not what they were."""
    error = await _failing_insert(settings)
    shown = "".join(traceback.format_exception(error))
    assert "no_such_table" in shown
    assert SECRET not in shown
    assert SECRET not in str(error)
    assert "parameters hidden" in str(error)


async def test_echo_shows_the_values_on_purpose(settings_factory: SettingsFactory) -> None:
    """With `CAUCE_DB__ECHO` (a debugging switch that logs every statement with its
    values anyway) errors show them too."""
    error = await _failing_insert(settings_factory(db={"echo": True}))
    assert SECRET in str(error)


def test_a_default_port_spelled_out_is_the_same_origin() -> None:
    """`https://crm.es:443` is `https://crm.es` (yarl's `origin()` tells them apart, and a
    same-host redirect lost its credentials); scheme, host or another port still differ."""
    from yarl import URL

    from cauce.core.http.client import _origin

    base = _origin(URL("https://crm.es/a"))
    assert _origin(URL("https://CRM.es:443/b")) == base
    for other in ("http://crm.es/a", "https://crm.es:8443/a", "https://api.crm.es/a"):
        assert _origin(URL(other)) != base, other

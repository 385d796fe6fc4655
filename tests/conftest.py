"""Shared fixtures: settings, a fresh migrated database per test on SQLite and PostgreSQL.

PostgreSQL comes from `CAUCE_TEST_POSTGRES_URL` (an admin URL), which the README test
command sets after starting a throwaway server (scripts/services.sh). Without it the
PostgreSQL variants skip, unless `CAUCE_TEST_REQUIRE_POSTGRES=1` (the test command sets
it), in which case they fail: CI never silently drops half the matrix.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from cauce.app import create_app
from cauce.core.config import Settings, load_settings
from cauce.core.db import create_database
from cauce.core.db.migrate import upgrade

TEST_SECRET = "test-secret-key-0123456789abcdef0123456789"
BACKENDS = ["sqlite", "postgresql"]

# Hypothesis's own defaults fail an example that runs longer than 200 ms (on a second
# run it is fast, so the error is "Flaky") and a strategy that generates slowly: both
# measure the machine, not the code. Hypothesis turns both off by itself only where it
# recognises a CI environment; here they are off wherever the suite runs. Whatever the
# profile (`default`, or `ci` in a CI), a failure prints the blob that replays it.
_PROFILE = hypothesis_settings.get_current_profile_name()
hypothesis_settings.register_profile(
    _PROFILE,
    hypothesis_settings.get_profile(_PROFILE),
    deadline=None,
    suppress_health_check={
        *hypothesis_settings.get_profile(_PROFILE).suppress_health_check,
        HealthCheck.too_slow,
    },
    print_blob=True,
)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: isolated data dir, a valid secret, quiet access log."""
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "secret_key": TEST_SECRET,
        "log": {"format": "json", "level": "warning"},
    }
    values.update(overrides)
    return Settings(**values)


def _pg_admin_url() -> str | None:
    return os.environ.get("CAUCE_TEST_POSTGRES_URL")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _require_pg() -> str:
    url = _pg_admin_url()
    if url is None:
        if os.environ.get("CAUCE_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("CAUCE_TEST_POSTGRES_URL is not set but PostgreSQL tests are required")
        pytest.skip("no PostgreSQL (set CAUCE_TEST_POSTGRES_URL; the README test command does)")
    return url


def _pg_exec(admin_url: str, sql: str) -> None:
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.encode())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    settings = make_settings(path.parent)

    async def build() -> None:
        db = create_database(settings, url=f"sqlite+aiosqlite:///{path}")
        await upgrade(db)
        await db.dispose()

    asyncio.run(build())
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a migrated PostgreSQL template database for this test session."""
    admin = _require_pg()
    name = f"cauce_tpl_{uuid.uuid4().hex[:10]}"
    _pg_exec(admin, f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)

    async def build() -> None:
        db = create_database(make_settings(Path(".")), url=url)
        await upgrade(db)
        await db.dispose()

    asyncio.run(build())
    yield name
    _pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each database-touching test runs once per backend."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "cauce.db"
        shutil.copyfile(template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    template_name: str = request.getfixturevalue("pg_template")
    admin = _require_pg()
    name = f"cauce_t_{uuid.uuid4().hex[:12]}"
    _pg_exec(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    _pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    admin = _require_pg()
    name = f"cauce_e_{uuid.uuid4().hex[:12]}"
    _pg_exec(admin, f'CREATE DATABASE "{name}"')
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    _pg_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(tmp_path: Path, database_url: str) -> SettingsFactory:
    """Build settings bound to this test's database, with overrides."""

    def build(**overrides: Any) -> Settings:
        overrides.setdefault("database_url", database_url)
        return make_settings(tmp_path, **overrides)

    return build


@pytest.fixture
def settings(settings_factory: SettingsFactory) -> Settings:
    """Default test settings on this test's database."""
    return settings_factory()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running."""
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cauce.test") as c:
        yield c


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """For settings tests: no CAUCE_* variable from the caller, and a working directory
    without a cauce.toml."""
    for name in list(os.environ):
        if name.startswith("CAUCE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def toml(clean_env: None, tmp_path: Path) -> Callable[[str], Settings]:
    """Load settings from a `cauce.toml` holding the given text, with no CAUCE_* variables
    (`clean_env`)."""

    def load(text: str) -> Settings:
        (tmp_path / "cauce.toml").write_text(text, encoding="utf-8")
        return load_settings()

    return load

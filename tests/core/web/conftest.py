"""Fixtures for the operator API: the app with test tasks, keys, and a way to run jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.db import unit_of_work
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from tests.conftest import SettingsFactory


class CrmDown(Exception):
    """The failure the `deliver` test task raises while `Switches.fail` is on."""


@dataclass
class Switches:
    """What the test tasks do, and what they did."""

    fail: bool = False
    runs: list[int] = field(default_factory=list)


def tasks_for(switches: Switches) -> TaskRegistry:
    """`deliver` (one attempt, fails while `switches.fail`) and `other` (queue `slow`)."""
    registry = TaskRegistry()

    @registry.task("deliver", retry=RetryPolicy(max_attempts=1))
    async def deliver(ctx: JobContext, payload: JsonDict) -> None:
        if switches.fail:
            raise CrmDown("the CRM answered 503")
        switches.runs.append(ctx.job_id)

    @registry.task("other", queue="slow")
    async def other(ctx: JobContext, payload: JsonDict) -> None:
        switches.runs.append(ctx.job_id)

    return registry


@pytest.fixture
def switches() -> Switches:
    """Controls the test tasks."""
    return Switches()


@pytest.fixture
async def jobs_app(settings_factory: SettingsFactory, switches: Switches) -> AsyncIterator[FastAPI]:
    """The app with the test tasks and no background worker: tests run jobs with `drain`."""
    settings = settings_factory(jobs={"embedded_worker": False})
    app = create_app(settings, tasks=tasks_for(switches))
    async with LifespanManager(app):
        yield app


def resources_of(app: FastAPI) -> Resources:
    """The app's resources."""
    resources: Resources = app.state.resources
    return resources


async def drain(app: FastAPI) -> None:
    """Run every due job to the end with a worker of the app's engine."""
    await job_worker_for(resources_of(app)).run_until_idle(30)


Defer = Callable[..., Awaitable[int]]


@pytest.fixture
def defer(jobs_app: FastAPI) -> Defer:
    """Defer one job in its own transaction; returns its id."""

    async def go(task: str, payload: JsonDict | None = None, **options: object) -> int:
        resources = resources_of(jobs_app)
        async with unit_of_work(resources.db.sessionmaker) as session:
            result = await resources.jobs.defer(session, task, payload or {}, **options)  # type: ignore[arg-type]
        return result.job_id

    return go


@pytest.fixture
async def admin_headers(jobs_app: FastAPI) -> dict[str, str]:
    """Authorization for a key with `jobs:admin`."""
    created = await resources_of(jobs_app).api_keys.create("ops", ["jobs:admin"])
    return {"authorization": f"Bearer {created.token}"}


@pytest.fixture
async def api(jobs_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on `jobs_app`."""
    transport = httpx.ASGITransport(app=jobs_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cauce.test") as c:
        yield c

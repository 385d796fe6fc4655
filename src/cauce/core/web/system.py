"""Operational routes: liveness, readiness, metrics, and `/v1/me`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
import structlog
from fastapi import APIRouter, Depends, Request
from opentelemetry.instrumentation.utils import suppress_instrumentation
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict
from starlette.responses import PlainTextResponse, Response

from cauce.core.observability.metrics import exposition
from cauce.core.security.apikeys import Principal
from cauce.core.web.auth import require_scope
from cauce.core.web.openapi import NUL_IN_URL, key_problems, problems
from cauce.core.web.problems import problem_response
from cauce.core.web.routing import CauceRoute

system_router = APIRouter(
    route_class=CauceRoute, tags=["operations"], responses=problems({400: NUL_IN_URL})
)
v1_router = APIRouter(
    prefix="/v1",
    route_class=CauceRoute,
    tags=["identity"],
    responses=problems({400: NUL_IN_URL, **key_problems()}),
)

READY_TIMEOUT_SECONDS = 2.0
log = structlog.get_logger("cauce.http")


class Health(BaseModel):
    """Liveness answer."""

    model_config = ConfigDict(extra="forbid")
    status: str


class Me(BaseModel):
    """The calling API key."""

    model_config = ConfigDict(extra="forbid")
    key_id: str
    name: str
    scopes: list[str]


@system_router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process is up and its event loop answers; checks nothing else."""
    return Health(status="ok")


@system_router.get(
    "/readyz",
    summary="Readiness",
    responses=problems(
        {503: "`not_ready`: a dependency does not answer; `checks` says which (`failed`)"}
    ),
)
async def readyz(request: Request) -> Response:
    """Every configured dependency answers; 503 names the ones that do not.

    A check with details (the job engine names itself) answers an object
    `{"status": "ok", ...details}`; the others answer `"ok"` or `"failed"`.
    """
    resources = request.app.state.resources
    checks = resources.health_checks
    details: dict[str, dict[str, str]] = getattr(resources, "health_details", {})
    names = list(checks)

    async def run(name: str) -> str | None:
        try:
            # Probes are polled every few seconds: tracing them would bury real traces.
            with suppress_instrumentation():
                async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                    await checks[name]()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"{type(exc).__name__}"
        return None

    results = await asyncio.gather(*(run(n) for n in names))
    failed = {n: r for n, r in zip(names, results, strict=True) if r is not None}
    status: dict[str, object] = {}
    for n in names:
        state = "ok" if n not in failed else "failed"
        status[n] = {"status": state, **details[n]} if n in details else state
    if failed:
        return problem_response(
            request,
            status=503,
            code="not_ready",
            title="Not ready",
            detail="failed: " + ", ".join(f"{n} ({e})" for n, e in failed.items()),
            checks=status,
        )
    return Response(
        content=orjson.dumps({"status": "ready", "checks": status}),
        media_type="application/json",
    )


@system_router.get(
    "/metrics",
    summary="Prometheus metrics",
    # Its answer is the text exposition format (`text/plain; version=...`), for the
    # document: the route builds its `Response` itself.
    response_class=PlainTextResponse,
    response_description="The metrics, in Prometheus's text exposition format",
)
async def metrics(request: Request) -> Response:
    """The app's Prometheus registry in the text exposition format (with several
    serving processes, all of theirs summed: `exposition`).

    Gauges read from the database (job queue depth) are refreshed first; if that fails or
    is slow, the scrape still answers, with the previous values.
    """
    resources = request.app.state.resources
    for refresh in getattr(resources, "before_scrape", ()):
        try:
            with suppress_instrumentation():
                async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                    await refresh()
        except Exception as exc:  # noqa: BLE001 - stale gauges beat a failed scrape
            log.warning("metrics.refresh_failed", error_class=type(exc).__name__)
    return Response(exposition(resources.registry), media_type=CONTENT_TYPE_LATEST)


@v1_router.get("/me", response_model=Me, summary="The calling API key")
async def me(principal: Annotated[Principal, Depends(require_scope(None))]) -> Me:
    """Name and scopes of the key that made this request."""
    return Me(key_id=principal.key_id, name=principal.name, scopes=sorted(principal.scopes))

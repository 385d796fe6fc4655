"""How the composition root (`cauce.app`, `cauce.worker`) plugs the leads context in.

`open_leads` builds the leads runtime (scorer, metrics, CRM client) and registers the
context's job handlers; `routers` are its HTTP routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog
from fastapi import APIRouter
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.config import Settings, setting_name
from cauce.core.db import utcnow
from cauce.core.errors import ConfigError
from cauce.core.http.registry import HttpClients
from cauce.core.jobs.ports import JobQueue
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.web.idempotency import IdempotencyStore
from cauce.leads.adapters import build_crm
from cauce.leads.candidates import (
    forget_erased,
    forget_erased_at_or_after,
    last_history_id,
    warm,
)
from cauce.leads.endpoints import router
from cauce.leads.endpoints_imports import imports_router
from cauce.leads.endpoints_lead import lead_router
from cauce.leads.endpoints_scoring import scoring_router
from cauce.leads.endpoints_search import search_router
from cauce.leads.endpoints_webhooks import webhooks_router
from cauce.leads.imports_upkeep import register_import_task
from cauce.leads.intake_groups import IntakeGroups
from cauce.leads.matching.known import KnownLeads
from cauce.leads.metrics import LeadsMetrics
from cauce.leads.ports import CrmClient
from cauce.leads.routing import rotation, unreachable_by_place
from cauce.leads.scoring import MODEL_STORE_PATH, PointsModel
from cauce.leads.service import LeadsRuntime, Scorer
from cauce.leads.sync_backlog import refresh_sync_gauges
from cauce.leads.tasks import LeadsTaskDeps, register_leads_tasks

log = structlog.get_logger("cauce.leads")


def routers() -> list[APIRouter]:
    """The leads context's HTTP routes (imports, search and intake first: `/import/...`,
    `/export.csv` and `/batch` before `/{id}`, the routes on one lead)."""
    return [imports_router, search_router, scoring_router, router, lead_router, webhooks_router]


# Room for the multipart framing and the options field around the file itself.
_UPLOAD_OVERHEAD = 1 << 20


def body_limits(settings: Settings) -> dict[str, int]:
    """Request body limits of the leads routes that take more than `http.max_body_bytes`:
    `POST /v1/leads/batch` (`leads.max_batch_bytes`: 1,000 leads with their custom fields
    are megabytes), and `POST /v1/leads/import`, which streams its file to disk and
    refuses it past `leads.max_import_bytes` itself (`imports.py`)."""
    return {
        f"{router.prefix}/batch": settings.leads.max_batch_bytes,
        imports_router.prefix: settings.leads.max_import_bytes + _UPLOAD_OVERHEAD,
    }


def document_limits(schema: dict[str, Any], settings: Settings) -> None:
    """Write the configured batch limit into the app's OpenAPI `schema` (the request
    model says the default, 1,000)."""
    operation = schema["paths"][f"{router.prefix}/batch"]["post"]
    for media in operation["requestBody"]["content"].values():
        media["schema"]["properties"]["items"]["maxItems"] = settings.leads.max_batch


def scrape_refreshes(runtime: LeadsRuntime) -> list[Callable[[], Awaitable[None]]]:
    """What `/metrics` refreshes first for the leads context: the candidate cache's
    gauges (the scraped process's; `_candidate_cache_seen`), and the CRM backlog's, when
    a CRM is configured (`sync_backlog`)."""

    async def cache() -> None:
        _candidate_cache_seen(runtime)

    if runtime.settings.crm.provider == "none":
        return [cache]

    async def refresh() -> None:
        await refresh_sync_gauges(runtime.sessionmaker, runtime.metrics)

    return [cache, refresh]


# How often a process copies its candidate cache's counts onto its metrics besides before
# a scrape it answers: the other processes of `cauce serve --workers N` (a scrape reaches
# one of them) and `cauce worker` (its metrics server refreshes nothing).
CANDIDATE_CACHE_GAUGES_SECONDS = 15.0


def _candidate_cache_seen(runtime: LeadsRuntime) -> None:
    known = runtime.known
    runtime.metrics.candidate_cache_seen(len(known), known.size, known.evicted)


async def _publish_candidate_cache(runtime: LeadsRuntime) -> None:
    """Copy the candidate cache's counts onto the metrics every
    `CANDIDATE_CACHE_GAUGES_SECONDS` (a few integers: nothing on intake's path)."""
    while True:
        _candidate_cache_seen(runtime)
        await asyncio.sleep(CANDIDATE_CACHE_GAUGES_SECONDS)


def check_settings(settings: Settings) -> None:
    """What the settings cannot check without the leads context (start-up refuses it in
    one line, `ConfigError`): a routing rule an earlier one takes every lead of through
    Spain's places (`routing.unreachable_by_place`), named where it was written (the
    settings file's key or the environment variable, `setting_name`)."""
    problems = [
        f"{setting_name(('leads', 'routing_rules', index))}: {why}"
        for index, why in unreachable_by_place(settings.leads.routing_rules)
    ]
    if problems:
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}")


def scorer_for(settings: Settings) -> Scorer:
    """The scorer intake uses: the active learned model, else the points model."""
    points = PointsModel(settings.leads.scoring_rules)
    if not (settings.data_dir / MODEL_STORE_PATH / "active").exists():
        return points  # no trained model: skip importing scikit-learn at all
    from cauce.leads.learned import load_active

    learned = load_active(settings.data_dir)
    if learned is None:
        return points
    log.info("leads.scoring.learned_model", model=learned.name)
    return learned


# How often a process forgets the leads other processes erased (`candidates.forget_erased`).
ERASED_SWEEP_SECONDS = 60.0


async def _warm(sessionmaker: async_sessionmaker[AsyncSession], known: KnownLeads) -> int | None:
    """Fill the cache; the history row the erasure sweep starts after (read first, so an
    erasure during the warm-up is swept), None if the database could not be read."""
    # A process that cannot read its leads now (the database is down) starts cold: its
    # intakes read the candidates they need, as they would have anyway.
    with suppress_instrumentation():  # upkeep, no request's: no spans of its own
        try:
            start: int | None = await last_history_id(sessionmaker)
        except Exception as error:  # noqa: BLE001 - logged; the sweep reads it later
            log.warning("leads.candidates_warm_failed", error=type(error).__name__)
            return None
        try:
            await warm(sessionmaker, known)
        except Exception as error:  # noqa: BLE001 - logged; intake works without it
            log.warning("leads.candidates_warm_failed", error=type(error).__name__)
    return start


async def _sweep_erased(
    sessionmaker: async_sessionmaker[AsyncSession],
    known: KnownLeads,
    warming: asyncio.Task[int | None],
) -> None:
    """Forget, every `ERASED_SWEEP_SECONDS`, the leads erased since the last sweep but
    one: each stretch of history is read twice, so an erasure whose transaction took a
    lower id but committed after a sweep read past it (PostgreSQL) is still seen. The
    first sweep also forgets the leads erased shortly before the process started, whose
    history rows may have committed after it read where to start."""
    began = utcnow() - timedelta(seconds=2 * ERASED_SWEEP_SECONDS)
    start = await asyncio.shield(warming)
    while start is None:  # the database could not be read at start-up
        await asyncio.sleep(ERASED_SWEEP_SECONDS)
        try:
            with suppress_instrumentation():
                start = await last_history_id(sessionmaker)
        except Exception as error:  # noqa: BLE001 - logged; tried again
            log.warning("leads.erased_sweep_failed", error=type(error).__name__)
    older = newer = start
    first = True
    while True:
        await asyncio.sleep(ERASED_SWEEP_SECONDS)
        try:
            with suppress_instrumentation():
                if first:
                    await forget_erased_at_or_after(sessionmaker, known, began)
                    first = False
                older, newer = newer, await forget_erased(sessionmaker, known, older)
        except Exception as error:  # noqa: BLE001 - logged; the next sweep covers it
            log.warning("leads.erased_sweep_failed", error=type(error).__name__)


@asynccontextmanager
async def open_leads(
    settings: Settings,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    tasks: TaskRegistry,
    http_clients: HttpClients,
    registry: CollectorRegistry | None,
    tracer_provider: TracerProvider | None = None,
    crm: CrmClient | None = None,
) -> AsyncIterator[LeadsRuntime]:
    """Build the leads runtime and register its tasks; closes the CRM client on exit.

    `crm` replaces the configured CRM (tests, the demo)."""
    check_settings(settings)
    runtime = LeadsRuntime(
        settings=settings,
        sessionmaker=sessionmaker,
        queue=queue,
        scorer=scorer_for(settings),
        metrics=LeadsMetrics(registry),
        known=KnownLeads(settings.leads.candidate_cache_size),
    )
    runtime.metrics.scorer_loaded(runtime.scorer)
    client = crm if crm is not None else build_crm(settings, http_clients)
    tracer = tracer_provider.get_tracer("cauce.leads") if tracer_provider else None
    register_leads_tasks(
        tasks,
        LeadsTaskDeps(settings, sessionmaker, client, runtime.metrics, runtime.known, tracer),
    )
    register_import_task(tasks, lambda: runtime)
    if settings.leads.intake_group_max > 1:
        runtime.groups = IntakeGroups(runtime, IdempotencyStore(), tracer=tracer)
    for members in settings.leads.teams.values():
        rotation(members)  # built now, not on the team's first lead (up to ~0.3 s)
    warming = asyncio.create_task(
        _warm(sessionmaker, runtime.known), name="leads-candidates-warm-up"
    )
    runtime.warming = warming
    sweeping = asyncio.create_task(
        _sweep_erased(sessionmaker, runtime.known, warming), name="leads-erased-sweep"
    )
    publishing = asyncio.create_task(
        _publish_candidate_cache(runtime), name="leads-candidate-cache-gauges"
    )
    try:
        yield runtime
    finally:
        for task in (publishing, sweeping, warming):
            task.cancel()
        await asyncio.gather(publishing, sweeping, warming, return_exceptions=True)
        groups, runtime.groups = runtime.groups, None  # a late request runs on its own
        if groups is not None:
            await groups.aclose()
        if client is not None:
            await client.aclose()

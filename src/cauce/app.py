"""The composition root of the HTTP API: `create_app(settings)` builds every resource.

`open_resources` builds what the API and `cauce worker` share (database, API keys, job
queue and tasks); the lifespan adds the HTTP side and, on SQLite, the embedded worker.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

import cauce
from cauce.core.config import Settings
from cauce.core.db import Database, create_database
from cauce.core.db.disk import disk_check
from cauce.core.db.migrate import prepare_schema
from cauce.core.http.registry import HttpClients
from cauce.core.http.setup import build_http_clients
from cauce.core.jobs.factory import JobWorker, build_job_queue, build_job_worker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobQueue
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.observability.metrics import (
    HttpMetrics,
    PoolCollector,
    PoolStats,
    build_registry,
    process_stopped,
)
from cauce.core.observability.tracing import (
    build_tracer_provider,
    instrument_engine,
    redact_server_span,
)
from cauce.core.security.apikeys import ApiKeyService
from cauce.core.web.jobs import jobs_router
from cauce.core.web.middleware import RequestContextMiddleware
from cauce.core.web.openapi import share_problem_schema
from cauce.core.web.problems import install_problem_handlers
from cauce.core.web.system import install_docs, system_router, v1_router
from cauce.leads.adapters import crm_client_options
from cauce.leads.ports import CrmClient
from cauce.leads.service import LeadsRuntime
from cauce.leads.wiring import body_limits as leads_body_limits
from cauce.leads.wiring import document_limits as document_leads_limits
from cauce.leads.wiring import open_leads
from cauce.leads.wiring import routers as leads_routers
from cauce.leads.wiring import scrape_refreshes as leads_scrape_refreshes
from cauce.tasks import register_tasks

log = structlog.get_logger("cauce.app")

HealthCheck = Callable[[], Awaitable[None]]
Refresh = Callable[[], Awaitable[None]]


@dataclass
class Resources:
    """Everything the lifespan built; routes reach it as `request.app.state.resources`."""

    settings: Settings
    db: Database
    api_keys: ApiKeyService
    registry: CollectorRegistry
    tracer_provider: TracerProvider | None
    jobs: JobQueue
    tasks: TaskRegistry
    job_metrics: JobMetrics
    # The worker this process runs (the embedded one, in `cauce serve` on SQLite), if any.
    job_worker: JobWorker | None = None
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    # Extra fields /readyz shows beside a check's status, e.g. {"jobs": {"engine": ...}}.
    health_details: dict[str, dict[str, str]] = field(default_factory=dict)
    # Run before each /metrics scrape, to refresh gauges read from the database.
    before_scrape: list[Refresh] = field(default_factory=list)
    # Outbound HTTP clients (one per upstream) and the leads context.
    http: HttpClients | None = None
    leads: LeadsRuntime | None = None


@asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    registry: CollectorRegistry,
    job_metrics: JobMetrics,
    tracer_provider: TracerProvider | None = None,
    tasks: TaskRegistry | None = None,
    crm: CrmClient | None = None,
) -> AsyncIterator[Resources]:
    """Build the resources the API and `cauce worker` share, and close them on exit.

    `tasks` is a registry to start from (tests add their own tasks this way); it is
    copied, then every context's tasks are added with `register_tasks`. `crm` replaces
    the configured CRM client (tests, the demo).
    """
    db = create_database(settings)
    stack = AsyncExitStack()
    try:
        await prepare_schema(db, settings)
        if (checkpointer := db.checkpointer()) is not None:  # SQLite: off the commits
            checkpointer.start()
            stack.callback(checkpointer.stop)
        if tracer_provider is not None:
            instrument_engine(db.engine, tracer_provider)
        api_keys = ApiKeyService(
            db.sessionmaker,
            settings.secret_key.get_secret_value().encode(),
            cache_ttl=settings.auth.cache_ttl_seconds,
            last_used_resolution=settings.auth.last_used_resolution_seconds,
        )
        task_registry = tasks.copy() if tasks is not None else TaskRegistry()
        queue = build_job_queue(db, task_registry, job_metrics)

        async def refresh_job_gauges() -> None:
            job_metrics.set_stats(await queue.stats())

        resources = Resources(
            settings=settings,
            db=db,
            api_keys=api_keys,
            registry=registry,
            tracer_provider=tracer_provider,
            jobs=queue,
            tasks=task_registry,
            job_metrics=job_metrics,
            health_checks={
                "database": db.ping,
                "jobs": queue.check,
                "disk": disk_check(settings.data_dir),
            },
            health_details={"jobs": {"engine": queue.engine}},
            before_scrape=[refresh_job_gauges],
        )
        register_tasks(task_registry, resources)
        http_clients, resilience = build_http_clients(
            settings,
            registry=registry,
            tracer_provider=tracer_provider,
            options=crm_client_options(settings),
        )
        stack.push_async_callback(resilience.aclose)
        stack.push_async_callback(http_clients.close)
        resources.http = http_clients
        resources.leads = await stack.enter_async_context(
            open_leads(
                settings,
                sessionmaker=db.sessionmaker,
                queue=queue,
                tasks=task_registry,
                http_clients=http_clients,
                registry=registry,
                tracer_provider=tracer_provider,
                crm=crm,
            )
        )
        resources.before_scrape.extend(leads_scrape_refreshes(resources.leads))
        yield resources
    finally:
        await stack.aclose()
        await db.dispose()


def job_worker_for(
    resources: Resources, *, concurrency: int | None = None, queues: Sequence[str] | None = None
) -> JobWorker:
    """A worker for `resources`' engine and tasks; `concurrency` and `queues` override
    the `jobs` settings."""
    return build_job_worker(
        resources.jobs,
        resources.db,
        resources.tasks,
        resources.job_metrics,
        resources.settings.jobs,
        tracer_provider=resources.tracer_provider,
        concurrency=concurrency,
        queues=queues,
    )


async def _start_embedded_worker(resources: Resources) -> JobWorker | None:
    """On SQLite the API process runs the jobs (unless `jobs.embedded_worker` is off)."""
    details = resources.health_details["jobs"]
    if resources.db.dialect != "sqlite":
        details["worker"] = "separate"  # `cauce worker` processes
        return None
    if not resources.settings.jobs.embedded_worker:
        details["worker"] = "off"
        return None
    worker = job_worker_for(resources)
    await worker.start()
    details["worker"] = "in-process"
    check_queue = resources.jobs.check

    async def check() -> None:
        await check_queue()
        if not worker.running:
            raise RuntimeError("the embedded job dispatcher has stopped")

    resources.health_checks["jobs"] = check
    return worker


# Container objects allocated (net) before the collector's youngest pass; CPython's own
# default is 700. See `_tune_collector`.
YOUNG_COLLECTION_THRESHOLD = 50_000


@functools.cache
def _tune_collector() -> None:
    """Tune the cyclic garbage collector for serving, once the first app of the process
    has started (once per process).

    - What exists now is left out of its full passes. Modules, pydantic and SQLAlchemy
      schemas, phone metadata and the app's resources live as long as the process, yet
      every full collection walked them: 0.15-0.3 s each, about one per 1,000-lead
      batch. Garbage is collected first, so only live objects are frozen; the cost is
      that one of them that later becomes cyclic garbage is never reclaimed (in a test
      process, the first app's resources).
    - Its youngest pass runs every `YOUNG_COLLECTION_THRESHOLD` container allocations
      instead of every 700. A request allocates a few hundred and frees nearly all of
      them by reference counting, so the passes found next to nothing and cost ~50 us of
      a ~1 ms lead intake (5 %, measured in-process with `gc.callbacks`); now ~5 us. The
      older passes keep their ratios, so they come as much rarer, and cyclic garbage
      waits at most that many allocations longer (a few MB).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


def _pool_reader(app: FastAPI) -> Callable[[], PoolStats]:
    def read() -> PoolStats:
        resources: Resources | None = getattr(app.state, "resources", None)
        if resources is None:
            return PoolStats(0, 0, 0)
        pool = resources.db.engine.pool
        checked_out = getattr(pool, "checkedout", lambda: 0)()
        idle = getattr(pool, "checkedin", lambda: 0)()
        size = getattr(pool, "size", lambda: 0)()
        return PoolStats(int(checked_out), int(idle), int(size))

    return read


def app_from_environment() -> FastAPI:
    """The API for the settings in the environment, logging configured: what each process
    of `cauce serve --workers N` builds (uvicorn imports it by name)."""
    from cauce.core.config import load_settings
    from cauce.core.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)


def create_app(
    settings: Settings,
    *,
    span_exporter: SpanExporter | None = None,
    tasks: TaskRegistry | None = None,
    crm: CrmClient | None = None,
) -> FastAPI:
    """Build the API for `settings`; resources are made in the lifespan, not here.

    `tasks`: a registry of extra tasks (tests), added to every context's. `crm`: a CRM
    client to use instead of the configured one (tests).
    """
    registry = build_registry()
    job_metrics = JobMetrics(registry)
    tracer_provider = build_tracer_provider(settings, span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with open_resources(
                settings,
                registry=registry,
                job_metrics=job_metrics,
                tracer_provider=tracer_provider,
                tasks=tasks,
                crm=crm,
            ) as resources:
                app.state.resources = resources
                app.state.leads = resources.leads
                worker = resources.job_worker = await _start_embedded_worker(resources)
                _tune_collector()
                log.info(
                    "cauce.started",
                    version=cauce.__version__,
                    database=resources.db.dialect,
                    jobs=resources.jobs.engine,
                )
                try:
                    yield
                finally:
                    if worker is not None:
                        await worker.stop()
        finally:
            if tracer_provider is not None:
                tracer_provider.shutdown()
            process_stopped()
            log.info("cauce.stopped")

    app = FastAPI(
        title="Cauce",
        version=cauce.__version__,
        summary="Self-hosted integration hub: leads, documents, tickets and backups.",
        lifespan=lifespan,
        # `/docs` is Cauce's own page (`install_docs`): FastAPI's loads Swagger UI from a
        # CDN without pinning a version or checking the files' integrity.
        docs_url=None,
        redoc_url=None,
        # No redirect from `/v1/leads/` to `/v1/leads`: Starlette builds its Location from
        # the request's Host header, which the client chooses. Such a path is a 404.
        redirect_slashes=False,
        # Cauce traces with its own provider (FastAPIInstrumentor below); FastAPI's native
        # telemetry would trace every request a second time whenever a global provider is
        # set, and checks the global providers on every request even when none is.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    # Routes are matched in order, one by one: the leads first, since they take the
    # traffic (the paths do not overlap; the operations' routes are the probes' few).
    for router in leads_routers():
        app.include_router(router)
    app.include_router(system_router)
    app.include_router(v1_router)
    app.include_router(jobs_router)
    install_docs(app)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=HttpMetrics(registry),
        max_body_bytes=settings.http.max_body_bytes,
        body_limits=leads_body_limits(settings),
        access_log_enabled=settings.http.access_log,
        access_log_client=settings.http.access_log_client,
    )
    registry.register(PoolCollector(_pool_reader(app)))

    def openapi() -> dict[str, Any]:
        # FastAPI's document (built once, then kept), with the limits settings choose.
        if app.openapi_schema is None:
            document_leads_limits(share_problem_schema(FastAPI.openapi(app)), settings)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    if tracer_provider is not None:
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=tracer_provider,
            excluded_urls="healthz,readyz,metrics",
            server_request_hook=redact_server_span,
        )
    return app

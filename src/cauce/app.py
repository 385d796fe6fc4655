"""The composition root of the HTTP API: `create_app(settings)` builds every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

import cauce
from cauce.core.config import Settings
from cauce.core.db import Database, create_database
from cauce.core.db.migrate import prepare_schema
from cauce.core.observability.metrics import HttpMetrics, PoolCollector, PoolStats, build_registry
from cauce.core.observability.tracing import build_tracer_provider, instrument_engine
from cauce.core.security.apikeys import ApiKeyService
from cauce.core.web.middleware import RequestContextMiddleware
from cauce.core.web.problems import install_problem_handlers
from cauce.core.web.system import system_router, v1_router

log = structlog.get_logger("cauce.app")

HealthCheck = Callable[[], Awaitable[None]]


@dataclass
class Resources:
    """Everything the lifespan built; routes reach it as `request.app.state.resources`."""

    settings: Settings
    db: Database
    api_keys: ApiKeyService
    registry: CollectorRegistry
    tracer_provider: TracerProvider | None
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)


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


def create_app(settings: Settings, *, span_exporter: SpanExporter | None = None) -> FastAPI:
    """Build the API for `settings`; resources are made in the lifespan, not here."""
    registry = build_registry()
    tracer_provider = build_tracer_provider(settings, span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = create_database(settings)
        try:
            await prepare_schema(db, settings)
            if tracer_provider is not None:
                instrument_engine(db.engine, tracer_provider)
            api_keys = ApiKeyService(
                db.sessionmaker,
                settings.secret_key.get_secret_value().encode(),
                cache_ttl=settings.auth.cache_ttl_seconds,
                last_used_resolution=settings.auth.last_used_resolution_seconds,
            )
            app.state.resources = Resources(
                settings=settings,
                db=db,
                api_keys=api_keys,
                registry=registry,
                tracer_provider=tracer_provider,
                health_checks={"database": db.ping},
            )
            log.info("cauce.started", version=cauce.__version__, database=db.dialect)
            yield
        finally:
            await db.dispose()
            if tracer_provider is not None:
                tracer_provider.shutdown()
            log.info("cauce.stopped")

    app = FastAPI(
        title="Cauce",
        version=cauce.__version__,
        summary="Self-hosted integration hub: leads, documents, tickets and backups.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_problem_handlers(app)
    app.include_router(system_router)
    app.include_router(v1_router)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=HttpMetrics(registry),
        max_body_bytes=settings.http.max_body_bytes,
        access_log_enabled=settings.http.access_log,
    )
    registry.register(PoolCollector(_pool_reader(app)))
    if tracer_provider is not None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, excluded_urls="healthz,readyz,metrics"
        )
    return app

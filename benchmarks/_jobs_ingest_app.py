"""The request of benchmarks/jobs_throughput.py's defer-cost figure, served by uvicorn.

Two routes that differ only by the defer:

- `POST /plain`: read the JSON body, validate it as a small lead (pydantic, as Cauce's
  API does: `model_validate_json` on the raw body), open Cauce's unit of work
  (`cauce.core.db.unit_of_work`), insert one row into `bench_leads`, commit, answer 201
  with the new id (orjson);
- `POST /defer`: the same, plus `queue.defer(session, "noop", {"lead_id": id})` inside the
  transaction, on the queue `cauce.core.jobs.factory.build_job_queue` builds for the
  database (EmbeddedJobQueue on SQLite, ProcrastinateJobQueue on PostgreSQL).

The jobs go to the queue `hold` and no worker runs (the embedded dispatcher is not
started either), so only the request's own cost is measured. The database is migrated
by the benchmark before the server starts; the business table is created here. uvicorn
runs with `cauce serve`'s options (uvloop and httptools when installed, no access log).

    .venv/bin/python benchmarks/_jobs_ingest_app.py --port 8001 --database-url URL
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, insert

from _bare_ingest_app import serve
from cauce.core.config import LogSettings, Settings
from cauce.core.db import create_database, unit_of_work
from cauce.core.jobs.factory import build_job_queue
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.observability.logging import configure_logging

TASK = "noop"
HOLD = "hold"
# A lead as a web form sends it: what wrk posts on every request.
BODY = orjson.dumps(
    {
        "email": "maria.garcia@bodegasalmudena.es",
        "name": "María García López",
        "phone": "+34 612 345 678",
        "company": "Bodegas Viña Almudena S.L.",
        "source": "web_form",
    }
)
METADATA = MetaData()
LEADS = Table(
    "bench_leads",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False),
    Column("name", String(200), nullable=False),
    Column("phone", String(32)),
    Column("company", String(200)),
    Column("source", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


class LeadIn(BaseModel):
    """The small lead each request carries."""

    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, max_length=32)
    company: str | None = Field(default=None, max_length=200)
    source: str = Field(default="api", max_length=64)


def create_app(url: str) -> FastAPI:
    """The app: /plain, /defer and /healthz on a Cauce database at `url`."""
    settings = Settings(database_url=url, log=LogSettings(level="warning", format="json"))
    configure_logging(settings)
    db = create_database(settings)
    registry = TaskRegistry()

    @registry.task(TASK, queue="bench")
    async def noop(ctx: JobContext, payload: JsonDict) -> None:
        return None

    queue = build_job_queue(db, registry, JobMetrics())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with db.engine.begin() as conn:
            await conn.run_sync(METADATA.create_all)
        yield
        await db.dispose()

    app = FastAPI(lifespan=lifespan, openapi_url=None)

    async def ingest(request: Request, defer: bool) -> Response:
        lead = LeadIn.model_validate_json(await request.body())
        async with unit_of_work(db.sessionmaker) as session:
            lead_id = (
                await session.execute(
                    insert(LEADS).values(**lead.model_dump()).returning(LEADS.c.id)
                )
            ).scalar_one()
            if defer:
                await queue.defer(session, TASK, {"lead_id": lead_id}, queue=HOLD)
        return Response(
            orjson.dumps({"id": lead_id}), status_code=201, media_type="application/json"
        )

    @app.post("/plain", status_code=201)
    async def plain(request: Request) -> Response:
        return await ingest(request, defer=False)

    @app.post("/defer", status_code=201)
    async def with_defer(request: Request) -> Response:
        return await ingest(request, defer=True)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def main() -> None:
    """Serve the app with `cauce serve`'s uvicorn options."""
    serve(create_app, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

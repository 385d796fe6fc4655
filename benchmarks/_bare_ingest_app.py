"""The baseline of benchmarks/leads_ingest.py: the same framework, one JSON body, one row.

`POST /v1/leads` parses the JSON body and inserts one row in one transaction; nothing
else (no auth, no validation, no de-duplication, no job). It runs on the stack `cauce
serve` runs on, so the ratio measures what Cauce adds on top of it:

- FastAPI behind one uvicorn process with `cauce serve`'s options (uvloop and httptools
  when installed, no access log, no server header);
- SQLAlchemy's async engine on the same driver (aiosqlite or psycopg). On SQLite the
  same pragmas as Cauce (WAL, synchronous=NORMAL, busy timeout) and a file in a fresh
  directory; on PostgreSQL Cauce's default pool size (10 + 10 overflow), without
  Cauce's `pool_pre_ping` (the baseline pays no more than the framework asks).

    .venv/bin/python benchmarks/_bare_ingest_app.py --port 8001 \
        --database-url sqlite+aiosqlite:////tmp/bare/bare.db
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from uvicorn.supervisors import Multiprocess

metadata = MetaData()
bare_leads = Table(
    "bare_leads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), index=True),
    Column("phone", String(32)),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("company", String(200)),
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> AsyncEngine:
    """An engine configured as the baseline's docstring says."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_timeout=10)


def create_app(url: str) -> FastAPI:
    """The bare app: one route, one table (created at start-up)."""
    engine = make_engine(url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan, openapi_url=None)

    @app.post("/v1/leads", status_code=201)
    async def ingest(request: Request) -> Response:
        data = orjson.loads(await request.body())
        row = {
            "email": data.get("email"),
            "phone": data.get("phone"),
            "first_name": data.get("first_name"),
            "last_name": data.get("last_name"),
            "company": data.get("company"),
            "payload": data,
            "created_at": datetime.now(UTC),
        }
        async with engine.begin() as conn:
            result = await conn.execute(insert(bare_leads).values(row).returning(bare_leads.c.id))
            lead_id = result.scalar_one()
        return Response(
            orjson.dumps({"id": lead_id}), status_code=201, media_type="application/json"
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


_URL_VARIABLE = "BARE_INGEST_DATABASE_URL"


def app_from_env() -> FastAPI:
    """The bare app on the database in `BARE_INGEST_DATABASE_URL` (each of `--workers`)."""
    return create_app(os.environ[_URL_VARIABLE])


async def _create_tables(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()


def serve(create: Callable[[str], FastAPI], description: str, factory: str | None = None) -> None:
    """Serve `create(--database-url)` on --port with `cauce serve`'s uvicorn options;
    with `--workers N`, N processes as `cauce serve --workers N` runs them, each built by
    `factory` (an import string) from the URL in the environment."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": args.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "lifespan": "on",
    }
    if args.workers > 1:
        if factory is None:
            raise SystemExit("this app runs in one process only")
        asyncio.run(_create_tables(args.database_url))  # once, not a race per process
        os.environ[_URL_VARIABLE] = args.database_url
        config = uvicorn.Config(factory, factory=True, workers=args.workers, **options)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    uvicorn.Server(uvicorn.Config(create(args.database_url), **options)).run()


def main() -> None:
    """Serve the bare app."""
    serve(create_app, __doc__.splitlines()[0], factory="_bare_ingest_app:app_from_env")


if __name__ == "__main__":
    main()

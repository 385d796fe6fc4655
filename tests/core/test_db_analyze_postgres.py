"""`core.db_analyze` on PostgreSQL: its statistics hold column values (`pg_stats`: the
most common ones, histogram bounds), and autovacuum refreshes them only once ~10 % of a
table's rows changed, so an erased person's email stayed there (found by a GDPR audit,
helper-147). The job analyzes the tables changed since their last analyze, or those a
request names (`request_analyze`, in the erasing transaction)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from cauce.app import Resources
from cauce.core.db import unit_of_work
from cauce.core.db.analyze import ANALYZE_TASK, analyze
from cauce.core.jobs.db_analyze import request_analyze
from tests.conftest import SettingsFactory
from tests.leads.api_client import serve_app

pytestmark = pytest.mark.postgres


async def _statistics(conn: AsyncConnection, table: str) -> str:
    rows = await conn.execute(
        text(
            "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats"
            " WHERE schemaname = current_schema() AND tablename = :table"
        ),
        {"table": table},
    )
    return " ".join(str(value) for row in rows for value in row if value is not None)


async def _last_analyzed(conn: AsyncConnection) -> dict[str, Any]:
    rows = await conn.execute(
        text(
            "SELECT relname, greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables"
            " WHERE schemaname = current_schema()"
        )
    )
    return {name: at for name, at in rows}


def _lead(i: int) -> dict[str, Any]:
    return {"email": f"persona.estadistica{i}@empresa-analyze.es", "last_name": "Quetzal"}


async def test_the_job_analyzes_changed_or_named_tables_so_erased_values_leave(
    settings_factory: SettingsFactory, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL's statistics (SQLite's sqlite_stat1 holds counts only)")
    settings = settings_factory(db={"analyze_cron": "off"}, jobs={"embedded_worker": False})
    async with serve_app(settings) as (app, api):
        resources: Resources = app.state.resources
        ids = []
        for i in range(4):
            answer = await api.post("/v1/leads", json=_lead(i))
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        engine = resources.db.engine
        async with engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE leads"))
            assert "persona.estadistica0@" in await _statistics(conn, "leads")
            before = await _last_analyzed(conn)

            # Erased: its row holds none of it, the statistics still do.
            assert (await api.delete(f"/v1/leads/{ids[0]}")).status_code == 204
            assert "persona.estadistica0@" in await _statistics(conn, "leads")

            # Named: analyzed whatever its change counts say (reported seconds late).
            await analyze(resources.db.sessionmaker, ["leads", "no_such_table"])
            assert "persona.estadistica0@" not in await _statistics(conn, "leads")
            assert "persona.estadistica1@" in await _statistics(conn, "leads")
            assert (await _last_analyzed(conn))["leads"] > before["leads"]

            # None named: the tables with a row changed since their last analyze only.
            await conn.execute(text("ANALYZE"))  # every table: none changed since
            middle = await _last_analyzed(conn)
            await conn.execute(text("UPDATE leads SET updated_at = updated_at WHERE id > 0"))
            await conn.execute(text("SELECT pg_stat_force_next_flush()"))
            await conn.execute(text("SELECT 1"))  # the flush, at this statement's end
            changed = await conn.scalar(
                text(
                    "SELECT n_mod_since_analyze FROM pg_stat_user_tables"
                    " WHERE relname = 'leads' AND schemaname = current_schema()"
                )
            )
            assert changed is not None
            assert changed > 0
            await analyze(resources.db.sessionmaker)
            after = await _last_analyzed(conn)
            assert after["leads"] > middle["leads"]
            assert after["webhook_inbox"] == middle["webhook_inbox"]  # unchanged: left


async def test_a_request_is_one_waiting_job_per_set_of_tables(
    settings_factory: SettingsFactory, backend: str
) -> None:
    settings = settings_factory(db={"analyze_cron": "off"}, jobs={"embedded_worker": False})
    async with serve_app(settings) as (app, _):
        resources: Resources = app.state.resources
        for tables in (["leads", "lead_sources"], ["lead_sources", "leads", "leads"]):
            async with unit_of_work(resources.db.sessionmaker) as session:
                await request_analyze(session, resources.jobs, tables)
        async with resources.db.engine.connect() as conn:
            jobs = await conn.scalar(
                text(
                    "SELECT count(*) FROM procrastinate_jobs WHERE task_name = :task"
                    if backend == "postgresql"
                    else "SELECT count(*) FROM cauce_jobs WHERE task = :task"
                ),
                {"task": ANALYZE_TASK},
            )
    assert jobs == (1 if backend == "postgresql" else 0)  # SQLite's statistics: counts

"""`core.db_analyze`: SQLite's planner statistics, refreshed on `db.analyze_cron`, make a
list filtered by country and creation time use the creation-time index (without them an
equality on `country` always looked more selective, and walked every Spanish lead), in
the app's own pooled connections too."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager
from sqlalchemy import event

from cauce.app import Resources, create_app
from cauce.core.db.analyze import ANALYZE_TASK
from tests.conftest import SettingsFactory, make_settings
from tests.leads.api_client import serve_app

EVERY_SECOND = "* * * * * *"


def _lead(batch: int, i: int) -> dict[str, Any]:
    return {
        "email": f"cliente{batch}.{i}@empresa{i % 7}.es",
        "first_name": "Lucía",
        "last_name": f"Prieto {i}",
        "country": "ES",
    }


def _stats(db_file: Path) -> dict[str, str] | None:
    """The leads' index statistics (None: no ANALYZE yet)."""
    with sqlite3.connect(db_file) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            return None
        return dict(conn.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'leads'"))


async def _wait_for_stats(db_file: Path, ready: Callable[[dict[str, str]], bool]) -> None:
    async with asyncio.timeout(20):
        while True:
            stats = _stats(db_file)
            if stats is not None and ready(stats):
                return
            await asyncio.sleep(0.2)


def _all_360_in_one_country(stats: dict[str, str]) -> bool:
    return stats.get("ix_leads_country", "").split()[:2] == ["360", "360"]


async def test_the_schedule_analyzes_and_the_planner_uses_it(
    settings_factory: SettingsFactory, backend: str
) -> None:
    """On SQLite the embedded worker runs `core.db_analyze` on its cron: the leads'
    indexes get statistics, and the app's own connections, open since before the run,
    then plan `GET /v1/leads?country=ES&created_after=..&created_before=..` on
    `ix_leads_created`, not on `ix_leads_country`. On PostgreSQL it is scheduled too
    (tests/core/test_db_analyze_postgres.py: what it analyzes there)."""
    settings = settings_factory(db={"analyze_cron": EVERY_SECOND})
    if backend == "postgresql":
        app = create_app(settings)
        async with LifespanManager(app):
            resources: Resources = app.state.resources
            assert ANALYZE_TASK in resources.tasks
            assert (ANALYZE_TASK, EVERY_SECOND) in [
                (s.task, s.cron) for s in resources.tasks.schedules
            ]
        return
    db_file = settings.data_dir / "cauce.db"
    statements: list[tuple[str, Any]] = []
    async with serve_app(settings) as (app, api):
        resources = app.state.resources
        assert (ANALYZE_TASK, EVERY_SECOND) in [(s.task, s.cron) for s in resources.tasks.schedules]
        # A first run before any lead: the app's pooled connections load the statistics
        # table as it appears, with nothing about the leads' indexes in it yet.
        await _wait_for_stats(db_file, lambda _: True)
        assert (await api.get("/v1/leads")).status_code == 200
        for batch in range(6):  # six creation times, one country
            items = [_lead(batch, i) for i in range(60)]
            answer = await api.post("/v1/leads/batch", json={"items": items})
            assert answer.status_code == 200, answer.text
        await _wait_for_stats(db_file, _all_360_in_one_country)  # a later run saw them all

        def keep(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            head = statement.lstrip().upper()
            if head.startswith(("SELECT", "WITH")) and "FROM leads" in statement:
                statements.append((statement, params))

        engine = resources.db.engine
        event.listen(engine.sync_engine, "before_cursor_execute", keep)
        try:
            listed = await api.get(
                "/v1/leads",
                params={
                    "country": "ES",
                    "created_after": "2000-01-01T00:00:00Z",
                    "created_before": "2000-01-02T00:00:00Z",
                },
            )
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", keep)
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == []
        # The page's own statement (a check of where the range lies may come first).
        statement, params = next(
            (s, p) for s, p in reversed(statements) if "created_at" in s and "country" in s
        )
        # Planned by each of the app's pooled connections (taken at once, so the ones
        # that opened before the last run too).
        async with AsyncExitStack() as stack:
            plans = []
            for _ in range(engine.pool.size()):  # type: ignore[attr-defined]
                conn = await stack.enter_async_context(engine.connect())
                rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
                plans.append(" ".join(str(tuple(row)[3]) for row in rows))
    for plan in plans:
        assert "ix_leads_created" in plan, plans
        assert "ix_leads_country" not in plan, plans


async def test_off_schedules_nothing(tmp_path: Path) -> None:
    """`db.analyze_cron` off: the task exists (a deferral by hand) but is not scheduled."""
    settings = make_settings(tmp_path, db={"analyze_cron": "off"})
    app = create_app(settings)
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        assert ANALYZE_TASK in resources.tasks
        assert ANALYZE_TASK not in [s.task for s in resources.tasks.schedules]
